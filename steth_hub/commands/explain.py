"""``steth explain``: draw where the model looked, over the spectrogram of each recording."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from steth_hub.explanation import TARGETS


def _png_for(file: Path, out: Path, many: bool) -> Path:
    """``--out`` is the PNG for one recording, or the folder for several (``FOLDER/<name>.png``)."""
    if many or out.is_dir() or out.suffix.lower() != ".png":
        return out / f"{file.stem}.png"
    return out


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", "model", default=None,
              help="Model folder or Hub name (default: the embedded steth/efficientat-asthma).")
@click.option("--explainer", "explainer", default=None,
              help="Explainer plugin (default: integrated-gradients for ast, gradcam for densenet201; "
                   "see `steth plugins --kind explainer`).")
@click.option("--target", type=click.Choice(TARGETS), default="decision", show_default=True,
              help="The class the map explains: the decided one, or always asthma / not_asthma.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="The PNG to write (one FILE), or a folder for one PNG per FILE.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: per file the probability, decision, map peak and PNG; failures; disclaimer.")
def explain(files, model, explainer, target, out, as_json):
    """Explain the screening of FILES: the spectrogram with the model's map over it, as a PNG.

    The picture shows the log-mel spectrogram (time in seconds, frequency in Hz), the
    explainer's map over it, and P(asthma) per clip with the model's threshold. A file that
    fails is listed with the reason and the fix; the others are still explained. The exit
    status is 1 only when no file could be explained.
    """
    from steth_hub.errors import ModelError, PluginError, StethError
    from steth_hub.explanation import explain as explain_recording
    from steth_hub.screening import DISCLAIMER

    many = len(files) > 1
    results, failures = [], []
    for file in files:
        png = _png_for(file, out, many)
        try:
            explanation = explain_recording(file, model=model, explainer=explainer, target=target)
            explanation.save_png(png)
        except StethError as exc:
            if isinstance(exc, (ModelError, PluginError)):
                raise  # the model or the explainer is wrong: the same for every file, so stop here
            failures.append({"source": os.fspath(file), "code": exc.code, "message": exc.message, "fix": exc.fix})
            continue
        except OSError as exc:
            failures.append({"source": os.fspath(file), "code": "write", "message": f"cannot write {png}: {exc}",
                             "fix": "check that the output folder exists and is writable"})
            continue
        results.append({**explanation.to_dict(), "png": os.fspath(png)})
        if not as_json:
            peak = results[-1]["peak"]
            where = f"; map peak at {peak['time_s']:.2f} s, {peak['frequency_hz']:.0f} Hz" if peak else ""
            click.echo(f"{file}: P(asthma) = {explanation.probability:.3f} -> {explanation.label} "
                       f"(threshold {explanation.threshold:.3f}); {explanation.explainer} map{where} -> {png}")
    if as_json:
        click.echo(json.dumps({"results": results, "failures": failures, "disclaimer": DISCLAIMER}, indent=2))
    else:
        for f in failures:
            click.secho(f"failed: {f['source']}: {f['message']}" + (f" (fix: {f['fix']})" if f.get("fix") else ""),
                        fg="red", err=True)
        if many or failures:
            click.echo(f"{len(results)} explained, {len(failures)} failed.")
        click.echo(DISCLAIMER)
    if not results:
        sys.exit(1)
