"""``steth export``: write ``model.onnx`` beside a model's safetensors, for the light screening runtime."""

from __future__ import annotations

import click


@click.command()
@click.argument("model", default="steth/efficientat-asthma")
@click.option("--tolerance", type=float, default=None,
              help="Largest accepted difference in P(asthma) per clip between torch and ONNX (default 1e-4).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17).")
def export(model, tolerance, opset):
    """Export MODEL (a model folder, or an embedded model: steth/efficientat-asthma, steth/ast-asthma) to MODEL/model.onnx.

    The network is exported with its normalisation (raw front-end features in, logits out) and
    checked against the torch model on the shipped example recordings before anything is
    written; steth.json then records the export under "onnx" (front end, tolerance, measured
    difference). `steth screen` uses it without torch. Needs the train extra (torch, onnx).
    """
    from pathlib import Path

    from steth_hub.errors import ModelError
    from steth_hub.hub import EMBEDDED, resolve
    from steth_hub.onnx_export import DEFAULT_OPSET, DEFAULT_TOLERANCE, export_folder

    if model not in EMBEDDED and not Path(model).expanduser().is_dir():
        raise ModelError("steth export writes into a model folder", path=model,
                         fix="pass a local folder written by `steth train` (download a Hub model first)")
    folder = resolve(model)
    block = export_folder(folder, opset=opset or DEFAULT_OPSET,
                          tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance)
    click.echo(f"wrote {folder / block['file']} (opset {block['opset']}, front end {block['frontend']['name']})")
    click.echo(f"P(asthma) from ONNX vs torch on {block['measured_on']}: max difference {block['max_abs_diff']:.2g} "
               f"(tolerance {block['tolerance']:g}); clip decisions agree {block['clip_decisions_agree']}")
