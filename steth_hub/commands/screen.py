"""``steth screen``: screen recordings for asthma with a trained model (the embedded one by default)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

import click


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--model", "model", default=None,
              help="Model folder or Hub name (default: the embedded steth/ast-asthma).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (results, failures, disclaimer).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def screen(files, model, as_json, quiet):
    """Screen FILES: P(asthma), the decision at the model's threshold, clips used and warnings.

    A file that fails is listed with the reason and the fix; the others are still screened.
    The exit status is 1 only when no file could be screened.
    """
    from steth_hub.screening import DISCLAIMER, screen_many

    results, failures = screen_many(files, model=model, progress=not quiet and not as_json)
    if as_json:
        click.echo(json.dumps({"results": [r.to_dict() for r in results], "failures": failures,
                               "disclaimer": DISCLAIMER}, indent=2))
    else:
        if results:
            _table(results)
        for f in failures:
            click.secho(f"failed: {f['source']}: {f['message']}" + (f" (fix: {f['fix']})" if f.get("fix") else ""),
                        fg="red", err=True)
        click.echo(f"\n{len(results)} screened, {len(failures)} failed.")
        if results:
            click.echo(_model_line(model, results[0]))
        click.echo(DISCLAIMER)
    if not results:
        sys.exit(1)


def _model_line(model, result) -> str:
    """Which model answered, what "positive" means, and how good it was in cross-validation."""
    from steth_hub.screening import load_model

    line = (f"Model: {result.model}, threshold {result.threshold:.3f}. Positive: the recording sounds like the "
            "asthma recordings the model learned from (refer for assessment).")
    evaluation = (getattr(load_model(model), "metadata", None) or {}).get("evaluation")
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
