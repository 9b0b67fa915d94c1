"""``steth preprocess``: cut a corpus into clean, normalised clips with a preset, and keep them.

    steth preprocess CORPUS [--preset NAME|YAML] [--out DIR] [--no-save] [--refresh] [--json]
    steth preprocess --list-presets
    steth preprocess --show-preset NAME|YAML

Prints the preset in use with every parameter (defaults filled in), the counts, and each
skipped recording with the reason. The clips are saved (atomically) to
``CORPUS/clips/<preset>/`` unless ``--no-save``; ``steth features`` and training reuse them.
The work is done by :mod:`steth_hub.preprocess`, imported when the command runs.
"""

from __future__ import annotations

import json
from collections import Counter

import click


def format_summary(clips, skipped: list[dict], *, reused: bool, saved_to: str | None) -> str:
    """The counts and the skipped recordings, as ``steth preprocess`` prints them."""
    n_recordings = int(clips.meta.get("n_recordings", len(set(clips.recording_ids)) + len(skipped)))
    per = Counter(clips.recording_ids)
    lines = [f"recordings: {n_recordings}, used: {len(per)}, skipped: {len(skipped)}",
             f"clips: {len(clips)} of {clips.waveforms.shape[1] / clips.sample_rate:g} s at {clips.sample_rate} Hz "
             f"({min(per.values())}-{max(per.values())} per recording), "
             f"patients: {len(set(clips.patient_ids))}, asthma clips: {int((clips.labels == 1).sum())}"]
    if skipped:
        codes = Counter(s.get("code") for s in skipped)
        lines.append("skipped by rule: " + ", ".join(f"{code} {n}" for code, n in codes.most_common()))
        for s in skipped:
            lines.append(f"  - {s.get('file') or s.get('recording_id')}: [{s.get('code')}] {s.get('reason')}")
    if saved_to:
        lines.append(("reused saved clips in " if reused else "saved clips to ") + saved_to)
    return "\n".join(lines)


@click.command()
@click.argument("corpus", required=False, type=click.Path(path_type=str))
@click.option("--preset", default=None, help="Built-in preset name or a YAML file [default: excerpt-10s].")
@click.option("--out", type=click.Path(path_type=str), default=None,
              help="Folder for the clips [default: CORPUS/clips/<preset>].")
@click.option("--no-save", is_flag=True, help="Only report; do not save the clips.")
@click.option("--refresh", is_flag=True, help="Recompute even if saved clips match the corpus and preset.")
@click.option("--list-presets", is_flag=True, help="List the built-in presets and exit.")
@click.option("--show-preset", "show", is_flag=True, help="Print the preset with all parameters and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of text.")
@click.option("--overwrite", is_flag=True,
              help="Replace --out even if it is a non-empty folder that is not a steth-hub clip set "
                   "(never allowed when it is or contains the corpus).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def preprocess(corpus: str | None, preset: str | None, out: str | None, no_save: bool, refresh: bool,
               list_presets: bool, show: bool, as_json: bool, overwrite: bool, quiet: bool) -> None:
    """Cut the recordings of CORPUS into clean, normalised clips with a preset.

    Recordings a step rejects (too short, clipped, ...) are skipped and listed; the rest go on.
    """
    from steth_hub.preprocess import BUILTIN_PRESETS, DEFAULT_PRESET, cached_clips, load_preset, preprocess_corpus

    if list_presets:
        for name in BUILTIN_PRESETS:
            p = load_preset(name)
            click.echo(p.describe("[default]" if name == DEFAULT_PRESET else ""))
            click.echo(f"  {p.description}\n")
        return
    chosen = load_preset(preset)
    if show:
        click.echo(chosen.to_yaml(), nl=False)
        return
    if corpus is None:
        raise click.UsageError("give a CORPUS folder (or --list-presets / --show-preset)")
    if out is not None and not no_save:  # the clips replace --out: never the corpus, nor someone else's folder
        from steth_hub.clips import CLIPSET_INDEX
        from steth_hub.fileio import check_output_folder

        check_output_folder(out, [corpus], markers=(CLIPSET_INDEX,), overwrite=overwrite, what="clip set")
    if not as_json:
        click.echo(chosen.describe("[default]" if preset is None else ""))
    if no_save:
        clips, skipped = preprocess_corpus(corpus, chosen, progress=not quiet)
        reused, saved_to = False, None
    else:
        clips, skipped, reused = cached_clips(corpus, chosen, progress=not quiet, refresh=refresh, out=out)
        from steth_hub.preprocess import clips_dir

        saved_to = str(out) if out else str(clips_dir(corpus, chosen))
    if as_json:
        click.echo(json.dumps({"preset": chosen.to_dict(), "n_clips": len(clips), "sample_rate": clips.sample_rate,
                               "n_recordings": clips.meta.get("n_recordings"), "skipped": skipped,
                               "saved_to": saved_to, "reused": reused}, indent=2, default=str))
        return
    click.echo(format_summary(clips, skipped, reused=reused, saved_to=saved_to))
