"""``steth screen``: screen recordings for asthma with a trained model (the embedded one by default)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

import click


@click.command()
@click.argument("files", nargs=-1, required=False, type=click.Path(dir_okay=True))
@click.option("--model", "model", default=None,
              help="Model folder or Hub name (default: the embedded steth/efficientat-asthma).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (results, failures, disclaimer).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--strict", is_flag=True,
              help="Exit with status 1 when any file failed (default: only when none could be screened).")
@click.option("--patient", "patient", default=None, metavar="ID",
              help="FILES are one patient's recordings: give one patient-level result (the model's own "
                   "aggregation rule). With --manifest: screen only this patient.")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="CSV or JSON of patients and recordings (patient_id, path, site, sex, age): one result "
                   "per patient.")
@click.option("--sex", default=None, help="With --patient: the patient's sex (F/M; shown, never a model input).")
@click.option("--age", default=None, help="With --patient: the patient's age in years (shown, never a model input).")
@click.option("--include-flagged", is_flag=True,
              help="Patient mode: also count recordings that fail the model's quality checks (clipping...), "
                   "which are otherwise shown but left out of the patient result.")
@click.option("--stability/--no-stability", default=None,
              help="Re-screen each recording under harmless changes (white noise 60 and 40 dB below it) and "
                   "warn when the decision changes. Default: the checks the model asks for in its steth.json "
                   "(the embedded EfficientAT models do); --stability runs them for any model; --no-stability "
                   "skips them (about 3 times faster).")
@click.option("--explain-text", is_flag=True,
              help="Vision-language models (--model steth/vlm-asthma): also print the answer the model writes "
                   "for each recording, parsed to a label, and the prompt's patient facts.")
def screen(files, model, as_json, quiet, strict, patient, manifest, sex, age, include_flagged, stability=None,
           explain_text=False):
    """Screen FILES: P(asthma), the decision at the model's threshold, clips used and warnings.

    A file that fails is listed with the reason and the fix; the others are still screened.
    The exit status is 1 when no file could be screened, and with --strict when any file failed.

    With --patient ID (or --manifest) the recordings of a patient give one patient-level result:
    the mean of the recordings' P(asthma), as the model's evaluation scored patients.
    """
    from steth_hub.screening import DISCLAIMER, screen_many

    if patient is not None or manifest is not None:
        _screen_patients(files, model, as_json, quiet, strict, patient, manifest, sex, age,
                         "keep" if include_flagged else "reject", explain_text, stability)
        return
    if not files:
        raise click.UsageError("give at least one FILE (or --manifest)")
    vlm = _vlm_prepare(model, [(str(f), f, None) for f in files], sex, age, explain_text) \
        if (explain_text or _is_vlm(model)) else {}
    results, failures = screen_many(files, model=model, progress=not quiet and not as_json, stability=stability)
    if as_json:
        rows = [r.to_dict() for r in results]
        for row in rows:
            if row["source"] in vlm:
                row["vlm"] = vlm[row["source"]]
        click.echo(json.dumps({"results": rows, "failures": failures, "disclaimer": DISCLAIMER}, indent=2))
    else:
        if results:
            _table(results)
        _vlm_lines(vlm)
        for f in failures:
            click.secho(f"failed: {f['source']}: {f['message']}" + (f" (fix: {f['fix']})" if f.get("fix") else ""),
                        fg="red", err=True)
        click.echo(f"\n{len(results)} screened, {len(failures)} failed.")
        if results:
            click.echo(_model_line(model, results[0]))
        click.echo(DISCLAIMER)
    if not results or (strict and failures):
        sys.exit(1)


def patients_from_options(files, patient, manifest, sex, age) -> list:
    """The patients to screen: ``--patient ID FILE...`` or a manifest (optionally one patient of it)."""
    from steth_hub.patient import PatientEntry, PatientFacts, RecordingInput, normalise_age, normalise_sex, \
        read_manifest

    if manifest is not None:
        if files:
            raise click.UsageError("give recordings either as FILES with --patient or in --manifest, not both")
        if sex is not None or age is not None:
            raise click.UsageError("with --manifest, give sex and age in its sex and age columns")
        entries = read_manifest(manifest)
        if patient is not None:
            entries = [e for e in entries if e.facts.patient_id == patient]
            if not entries:
                raise click.UsageError(f"patient {patient!r} is not in {manifest}")
        return entries
    if not files:
        raise click.UsageError("--patient needs the patient's recording FILES")
    facts = PatientFacts(str(patient), normalise_sex(sex, where="--sex"), normalise_age(age, where="--age"))
    return [PatientEntry(facts, [RecordingInput(str(f)) for f in files])]


def _screen_patients(files, model, as_json, quiet, strict, patient, manifest, sex, age, quality="reject",
                     explain_text=False, stability=None) -> None:
    from steth_hub.patient import screen_patient
    from steth_hub.screening import DISCLAIMER, load_model

    entries = patients_from_options(files, patient, manifest, sex, age)
    classifier = load_model(model)
    vlm = {}
    if explain_text or _is_vlm(classifier):  # a VLM's prompt carries each patient's facts and the site
        for e in entries:  # named R1, R2... as in the patient block (file names can carry annotations)
            vlm.update(_vlm_prepare(classifier, [(f"patient {e.facts.patient_id} R{i}", r.path, r.site)
                                                 for i, r in enumerate(e.recordings, start=1)],
                                    e.facts.sex, e.facts.age, explain_text))
    results = [screen_patient(e.recordings, classifier, patient=e.facts, progress=not quiet and not as_json,
                              quality=quality, stability=stability) for e in entries]
    if as_json:
        out = {"patients": [r.to_dict() for r in results], "disclaimer": DISCLAIMER}
        if vlm:
            out["vlm"] = vlm
        click.echo(json.dumps(out, indent=2))
    else:
        for result in results:
            _patient_block(result, facts_in_prompt=_is_vlm(classifier))
        _vlm_lines(vlm)
        click.echo(_model_line(classifier, next((r for r in results if r.screened), None)))
        click.echo(DISCLAIMER)
    if not any(r.screened for r in results) or (strict and any(r.rejected for r in results)):
        sys.exit(1)


def _is_vlm(model) -> bool:
    """The model reads patient facts in a prompt (a vision-language classifier)."""
    from steth_hub.screening import load_model

    try:
        return callable(getattr(load_model(model), "register_recording", None))
    except Exception:  # noqa: BLE001 - a model that cannot load fails where it is screened, with its own message
        return False


def _vlm_prepare(model, items, sex, age, text: bool = False) -> dict:
    """For a VLM: register each recording's facts (sex, age, site) for its prompt, and with ``text`` (--explain-text)
    get the answer it writes. ``items``: ``(name, path, site)``; returns ``{name: {"facts", "omitted", "prompt",
    "answer"?}}``. A recording that fails here fails again in screening, with its reason and fix."""
    from steth_hub.screening import load_model

    classifier = load_model(model)
    if not callable(getattr(classifier, "register_recording", None)):
        if text:
            click.secho("--explain-text: this model writes no text (only vision-language models do)", fg="yellow",
                        err=True)
        return {}
    from steth_builtin.vlm_screen import explain_text, register_facts

    out = {}
    for name, path, site in items:
        try:
            entry = register_facts(classifier, path, sex=sex, age=age, site=site)
            if text:
                entry["answer"] = explain_text(classifier, path)
        except Exception:  # noqa: BLE001
            continue
        out[name] = entry
    return out


def _vlm_lines(vlm: dict) -> None:
    from steth_builtin.vlm_screen import describe

    for name, entry in vlm.items():
        line = f"{name}: {describe(entry)}"
        if entry.get("answer"):
            a = entry["answer"]
            line += f"; the model writes: {a['text']!r} -> {a['label'] or 'no label found'}"
        click.echo(line)


def _patient_block(result, facts_in_prompt: bool = False) -> None:
    """One patient: the recordings (R1..., site, filter, never the file name), the rejected ones, the result."""
    facts = result.patient
    about = ", ".join(x for x in ({"F": "female", "M": "male"}.get(facts.sex or "", ""),
                                  f"{facts.age:g} years" if facts.age is not None else "") if x)
    note = "in the model's prompt" if facts_in_prompt else "not model inputs"
    click.echo(f"Patient {facts.patient_id}" + (f" ({about}; {note})" if about else ""))
    rows = [(r.id, r.site or "-", r.filter or "-", f"{r.probability:.3f}",
             "positive" if r.decision else "negative", str(r.n_clips), "yes" if r.drives else "-",
             "; ".join(r.warnings) or "-") for r in result.recordings]
    headers = ("REC", "SITE", "FILTER", "P(ASTHMA)", "SCREEN", "CLIPS", "DRIVES", "WARNINGS")
    if rows:
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers[:-1])]
        click.echo("  " + "  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths)) + "  " + headers[-1])
        for row in rows:
            click.echo("  " + "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1])
    for r in result.rejected:
        click.secho(f"  rejected {r.id}" + (f" ({r.site})" if r.site else "") + f": {r.message}"
                    + (f" (fix: {r.fix})" if r.fix else ""), fg="red")
    if result.screened:
        click.echo(f"  PATIENT: P(asthma) = {result.probability:.3f} -> "
                   f"{'positive' if result.decision else 'negative'} (threshold {result.threshold:.3f}; "
                   f"mean of {len(result.recordings)} recording(s); driven by {', '.join(result.drivers)})")
    else:
        click.secho(f"  PATIENT: no result: none of {len(result.rejected)} recording(s) could be screened", fg="red")
    unstable = [r.id for r in result.recordings if r.drives and r.stable is False]
    if result.screened and unstable:
        click.secho(f"  CAUTION: {', '.join(unstable)} drive(s) this result but did not survive harmless changes "
                    "(unstable): read the patient result as indeterminate and record those sites again.",
                    fg="yellow")
    click.echo(f"  {len(result.recordings)} screened, {len(result.rejected)} rejected. "
               "Recordings are named R1, R2... in the order given (file names can carry annotations).\n")


def _model_line(model, result) -> str:
    """Which model answered, what "positive" means, and how good it was in cross-validation."""
    from steth_hub.screening import load_model, model_name

    classifier = load_model(model)
    name = result.model if result is not None else model_name(classifier)
    threshold = result.threshold if result is not None else float(classifier.threshold)
    line = (f"Model: {name}, threshold {threshold:.3f}. Positive: the recording sounds like the "
            "asthma recordings the model learned from (refer for assessment).")
    evaluation = (getattr(classifier, "metadata", None) or {}).get("evaluation")
    return line + " " + _evaluation_sentence(evaluation)


def _measured(entry) -> bool:
    return isinstance(entry, Mapping) and isinstance(entry.get("value"), (int, float))


def _patient_auroc(block) -> Mapping | None:
    """``block["levels"]["patient"]["auroc"]`` when it holds a measured value, else None."""
    levels = block.get("levels") if isinstance(block, Mapping) else None
    patient = levels.get("patient") if isinstance(levels, Mapping) else None
    auroc = patient.get("auroc") if isinstance(patient, Mapping) else None
    return auroc if _measured(auroc) else None


def _evaluation_sentence(evaluation) -> str:
    """What the model's stored evaluation says, or that there is none (a quick smoke run counts as none)."""
    from steth_hub.evaluate import format_value

    if not isinstance(evaluation, Mapping) or _patient_auroc(evaluation.get("model")) is None:
        return "This model carries no evaluation: its accuracy is unknown."
    if evaluation.get("quick"):
        return "It was evaluated only by a quick smoke run: its accuracy is unknown."
    text = f"Cross-validated patient-level AUROC {format_value(_patient_auroc(evaluation['model']))}"
    baseline = _patient_auroc(evaluation.get("baseline"))
    if baseline is not None:
        text += f" (MFCC baseline {format_value(baseline)})"
    groups = evaluation["model"].get("subgroups")
    within = [(name.split("=", 1)[1], entry["auroc"]) for name, entry in
              (groups.items() if isinstance(groups, Mapping) else [])
              if str(name).startswith("source=") and isinstance(entry, Mapping) and _measured(entry.get("auroc"))]
    if within:  # pooled figures flatter a model that tells the corpora apart: say what it does within one
        text += "; within one source: " + ", ".join(f"{src} {format_value(a)}" for src, a in within)
    return text + ". See its model card for data and limits."


def _table(results) -> None:
    rows = [(r.source, f"{r.probability:.3f}", f"positive (>= {r.threshold:.3f})" if r.decision
             else f"negative (< {r.threshold:.3f})", str(r.n_clips), "; ".join(r.warnings) or "-") for r in results]
    headers = ("FILE", "P(ASTHMA)", "SCREEN", "CLIPS", "WARNINGS")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers[:-1])]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths)) + "  " + headers[-1])
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1])
