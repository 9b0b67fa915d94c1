"""``steth convert``: a third-party PyTorch state dict (.pt) to safetensors, read without running pickle code."""

from __future__ import annotations

import click


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def convert(checkpoint, out, overwrite):
    """Convert CHECKPOINT (a plain PyTorch state dict) to OUT (.safetensors), once.

    The checkpoint is read with torch.load(weights_only=True): tensors and plain containers only,
    never code. Anything but names -> tensors is refused. steth-hub loads only safetensors.
    """
    from steth_hub.convert import convert_checkpoint

    info = convert_checkpoint(checkpoint, out, overwrite=overwrite)
    click.echo(f"wrote {info['out']}: {info['tensors']} tensors, {info['parameters']:,} values "
               f"(source sha256 {info['sha256'][:12]}...)")
