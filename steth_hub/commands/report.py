"""``steth report``: the clinician's report for a patient, as PDF, HTML, JSON or HL7 FHIR R4."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.argument("files", nargs=-1, required=False, type=click.Path(dir_okay=True))
@click.option("--patient", "patient", default=None, metavar="ID",
              help="FILES are this patient's recordings (with --manifest: report only this patient).")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="CSV or JSON of patients and recordings (patient_id, path, site, sex, age).")
@click.option("--sex", default=None, help="With --patient: the patient's sex (F/M; shown, never a model input).")
@click.option("--age", default=None, help="With --patient: age in years (shown, never a model input).")
@click.option("--out", "outs", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Where to write: report.pdf, report.html, report.json or report.fhir.json (repeatable). "
                   "With several patients each file gets the patient's id before its suffix.")
@click.option("--model", "model", default=None, help="Model folder or Hub name (default: the default model).")
@click.option("--no-pictures", is_flag=True, help="Leave out the spectrogram and explanation map (faster).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--include-flagged", is_flag=True,
              help="Also count recordings that fail the model's quality checks (clipping...), which are "
                   "otherwise shown but left out of the patient result.")
def report(files, patient, manifest, sex, age, outs, model, no_pictures, quiet, include_flagged):
    """Write one standard page per patient: facts, per-recording results with quality flags, the
    patient-level result by the model's own aggregation rule, the model's validated performance,
    the deciding recording's spectrogram and explanation map, the model's identity, intended use
    and the disclaimer. Also as JSON and as an HL7 FHIR R4 DiagnosticReport (report.fhir.json).

    Screening support, not a diagnosis. The exit status is 1 when a patient has no usable recording.
    """
    from steth_hub.commands.screen import patients_from_options
    from steth_hub.patient import screen_patient
    from steth_hub.report import build_report, report_format, write_report
    from steth_hub.screening import DISCLAIMER, load_model

    if patient is None and manifest is None:
        raise click.UsageError("give --patient ID FILE... or --manifest FILE")
    for out in outs:
        report_format(out)  # a wrong suffix is an error before any work
    entries = patients_from_options(files, patient, manifest, sex, age)
    classifier = load_model(model)
    failed = False
    for entry in entries:
        result = screen_patient(entry.recordings, classifier, patient=entry.facts, progress=not quiet,
                                quality="keep" if include_flagged else "reject")
        content = build_report(result, classifier, pictures=not no_pictures)
        for out in outs:
            path = _out_path(out, entry.facts.patient_id) if len(entries) > 1 else Path(out)
            write_report(content, path)
            click.echo(f"wrote {path}")
        verdict = ("no result (no usable recording)" if not result.screened else
                   f"P(asthma) = {result.probability:.3f} -> {'positive' if result.decision else 'negative'} "
                   f"(threshold {result.threshold:.3f})")
        click.echo(f"patient {entry.facts.patient_id}: {verdict}; {len(result.recordings)} screened, "
                   f"{len(result.rejected)} rejected")
        for r in result.rejected:
            click.secho(f"  rejected {r.id}: {r.message}" + (f" (fix: {r.fix})" if r.fix else ""), fg="red", err=True)
        for note in content.data["pictures"]["notes"]:
            click.secho(f"  note: {note}", fg="yellow", err=True)
        failed = failed or not result.screened
    click.echo(DISCLAIMER)
    if failed:
        sys.exit(1)


def _out_path(out: str, patient_id: str) -> Path:
    """``report.pdf`` -> ``report-<patient>.pdf`` (``.fhir.json`` kept whole); the id made file-safe."""
    from steth_hub.report import FORMATS

    path = Path(out)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(patient_id)).strip(".") or "patient"
    name = path.name
    for suffix in FORMATS:
        if name.lower().endswith(suffix):
            return path.with_name(f"{name[: -len(suffix)]}-{safe}{name[-len(suffix):]}")
    return path.with_name(f"{name}-{safe}")
