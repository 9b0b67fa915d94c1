"""``steth demo``: serve the Gradio demo page locally (the same app as the Hugging Face Space)."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 makes the page reachable from other machines.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port to listen on (default: 7860, or the next free one).")
@click.option("--model", "models", multiple=True, metavar="NAME_OR_PATH",
              help="A model folder or Hub repo id to offer besides the embedded default (repeatable).")
@click.option("--max-seconds", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Refuse recordings longer than this (checked from the file header).")
@click.option("--max-mb", type=click.FloatRange(min=0.01), default=20.0, show_default=True,
              help="Refuse uploads larger than this many MiB (checked before decoding).")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Recordings screened at the same time; other visitors wait in the queue.")
@click.option("--share/--no-share", default=False, show_default=True,
              help="Also open a temporary public gradio.live link (traffic goes through Gradio's relay).")
def demo(host: str, port: int | None, models: tuple[str, ...], max_seconds: float, max_mb: float,
         concurrency: int, share: bool) -> None:
    """Launch the Gradio demo locally: record or upload a breath sound, get a screening result.

    Screening support, not a diagnosis. Stop it with Ctrl+C.
    """
    from steth_hub.demo import DEFAULT_MODEL, launch

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.secho(f"note: listening on {host}: anyone who can reach this machine can use the page", err=True,
                    fg="yellow")
    offered = [DEFAULT_MODEL, *[m for m in models if m != DEFAULT_MODEL]]
    launch(host=host, port=port, share=share, models=offered, max_seconds=max_seconds,
           max_bytes=int(max_mb * 2**20), concurrency=concurrency)
