"""``steth features``: compute spectrogram features of a corpus's clips once and keep them with it.

    steth features CORPUS [--extractor multiwindow-logmel|ast-fbank|...] [--preset NAME|YAML]
                          [--batch-size N] [--device cpu|cuda|auto] [--refresh]

Clips come from ``CORPUS/clips/<preset>/`` (made first if missing or stale); features go
to ``CORPUS/features/<preset>/<extractor>/``. A second run with the same corpus, preset and
extractor settings reads them back instead of recomputing. The work is done by
:func:`steth_hub.features.corpus_features`, imported (with torch) when the command runs.
"""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("corpus", type=click.Path(path_type=str))
@click.option("--extractor", default="multiwindow-logmel", show_default=True,
              help="Feature-extractor plugin (see `steth plugins --kind feature_extractor`).")
@click.option("--preset", default=None, help="Built-in preset name or a YAML file [default: excerpt-10s].")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Clips per batch.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or auto (multiwindow-logmel only).")
@click.option("--refresh", is_flag=True, help="Recompute clips and features even if the cache matches.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of text.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def features(corpus: str, extractor: str, preset: str | None, batch_size: int, device: str | None, refresh: bool,
             as_json: bool, quiet: bool) -> None:
    """Compute (or reuse) the features of every preprocessed clip of CORPUS."""
    from steth_hub.features import corpus_features
    from steth_hub.preprocess import load_preset

    chosen = load_preset(preset)
    params = {"device": device} if device else {}
    if not as_json:
        click.echo(chosen.describe("[default]" if preset is None else ""))
    result = corpus_features(corpus, extractor, chosen, extractor_params=params, batch_size=batch_size,
                             progress=not quiet, refresh=refresh)
    summary = {"extractor": extractor, "settings": result.meta.get("settings"), "preset": chosen.name,
               "n_clips": len(result), "shape": list(result.features.shape), "path": str(result.path),
               "reused": result.reused, "skipped": len(result.meta.get("skipped") or [])}
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    settings = ", ".join(f"{k}={v}" for k, v in (summary["settings"] or {}).items())
    click.echo(f"extractor {extractor}({settings})")
    click.echo(f"{summary['n_clips']} clips -> features {tuple(summary['shape'])}; "
               f"{summary['skipped']} recording(s) skipped in preprocessing")
    click.echo(("reused cached features in " if result.reused else "saved features to ") + summary["path"])
