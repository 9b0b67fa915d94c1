"""``steth screen``: screen recordings for asthma with a trained model (the embedded one by default)."""

from __future__ import annotations

import json
import sys

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
    from steth_hub.evaluate import format_value
    from steth_hub.screening import load_model

    line = (f"Model: {result.model}, threshold {result.threshold:.3f}. Positive: the recording sounds like the "
            "asthma recordings the model learned from (refer for assessment).")
    try:
        evaluation = (load_model(model).metadata or {}).get("evaluation") or {}
        auroc = evaluation["model"]["levels"]["patient"]["auroc"]
        baseline = ((evaluation.get("baseline") or {}).get("levels") or {}).get("patient", {}).get("auroc")
    except (KeyError, TypeError, AttributeError):
        return line + " This model carries no evaluation: its accuracy is unknown."
    line += f" Cross-validated patient-level AUROC {format_value(auroc)}"
    if baseline:
        line += f" (MFCC baseline {format_value(baseline)})"
    within = [(name.split("=", 1)[1], entry["auroc"]) for name, entry in
              ((evaluation.get("model") or {}).get("subgroups") or {}).items()
              if name.startswith("source=") and ((entry or {}).get("auroc") or {}).get("value") is not None]
    if within:  # pooled figures flatter a model that tells the corpora apart: say what it does within one
        line += "; within one source: " + ", ".join(f"{src} {format_value(a)}" for src, a in within)
    return line + ". See its model card for data and limits."


def _table(results) -> None:
    rows = [(r.source, f"{r.probability:.3f}", f"positive (>= {r.threshold:.3f})" if r.decision
             else f"negative (< {r.threshold:.3f})", str(r.n_clips), "; ".join(r.warnings) or "-") for r in results]
    headers = ("FILE", "P(ASTHMA)", "SCREEN", "CLIPS", "WARNINGS")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers[:-1])]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths)) + "  " + headers[-1])
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1])
