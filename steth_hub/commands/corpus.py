"""``steth corpus``: import recordings into a corpus folder, merge corpora, and inspect one.

    steth corpus import {kauh,icbhi,manifest} SRC OUT [--manifest CSV] [--folds N] [--seed S]
    steth corpus merge OUT SOURCES...
    steth corpus info CORPUS [--json]

The work is done by :mod:`steth_hub.corpus`, imported when a command runs (it loads
``datasets`` and scikit-learn only then).
"""

from __future__ import annotations

import json

import click

KINDS = ("kauh", "icbhi", "manifest")


@click.group()
def corpus() -> None:
    """Import a corpus of recordings and inspect it (see docs/corpus.md)."""


@corpus.command("import")
@click.argument("kind", type=click.Choice(KINDS, case_sensitive=False))
@click.argument("src", type=click.Path(path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--manifest", type=click.Path(path_type=str), default=None,
              help="CSV manifest (manifest importer; default SRC/manifest.csv).")
@click.option("--folds", "n_folds", type=int, default=5, show_default=True, help="Patient-level folds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold assignment.")
@click.option("--map-diagnosis", "diagnosis_map", multiple=True, metavar="OLD=NEW",
              help="Manifest importer: read diagnosis OLD as NEW (repeatable), e.g. 'Astma=asthma'. Unknown "
                   "diagnoses are otherwise an error, never silently 'not asthma'.")
@click.option("--allow-outside-paths", "allow_outside", is_flag=True,
              help="Manifest importer: accept paths that lead outside SRC (absolute, ../..).")
@click.option("--overwrite", is_flag=True,
              help="Replace OUT even if it is a non-empty folder that is not a corpus (never one holding SRC).")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary (errors still print).")
def import_(kind: str, src: str, out: str, manifest: str | None, n_folds: int, seed: int, diagnosis_map,
            allow_outside: bool, overwrite: bool, quiet: bool) -> None:
    """Import the recordings in SRC into the corpus folder OUT.

    Files that cannot be used are left out and reported (OUT/qc.json and the summary);
    OUT is replaced only once the new corpus is complete.
    """
    from steth_hub.corpus import import_corpus

    report = import_corpus(kind.lower(), src, out, manifest=manifest, n_folds=n_folds, seed=seed,
                           progress=not quiet, diagnosis_map=list(diagnosis_map) or None,
                           allow_outside=allow_outside, overwrite=overwrite)
    if not quiet:
        click.echo(report.summary())


@corpus.command()
@click.argument("out", type=click.Path(path_type=str))
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--folds", "n_folds", type=int, default=5, show_default=True, help="Patient-level folds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold assignment.")
@click.option("--overwrite", is_flag=True,
              help="Replace OUT even if it is a non-empty folder that is not a corpus (never one holding a SOURCE).")
@click.option("--quiet", is_flag=True, help="No summary.")
def merge(out: str, sources: tuple[str, ...], n_folds: int, seed: int, overwrite: bool, quiet: bool) -> None:
    """Merge imported corpora SOURCES into OUT (duplicates and conflicts checked across them)."""
    from steth_hub.corpus import merge_corpora

    report = merge_corpora(list(sources), out, n_folds=n_folds, seed=seed, overwrite=overwrite)
    if not quiet:
        click.echo(report.summary())


def _table(title: str, counts: dict) -> list[str]:
    width = max([len(title)] + [len(str(k)) for k in counts])
    lines = [f"{title.ljust(width)}  recordings  patients"]
    lines += [f"{str(k).ljust(width)}  {v['recordings']:>10}  {v['patients']:>8}" for k, v in counts.items()]
    return lines


def format_info(summary: dict) -> str:
    """The text ``steth corpus info`` prints."""
    per = summary["recordings_per_patient"]
    lines = [f"{summary['path']} ({summary['source']}): {summary['recordings']} recordings, "
             f"{summary['patients']} patients ({per['min']}-{per['max']} recordings per patient, "
             f"median {per['median']})", ""]
    for title, key in (("label", "by_label"), ("diagnosis", "by_diagnosis"), ("source", "by_source"),
                       ("fold", "by_fold")):
        lines += _table(title, summary[key]) + [""]
    qc = summary.get("qc") or {}
    if qc:
        lines.append(f"QC: {qc.get('found')} found, {qc.get('imported')} imported, {qc.get('skipped')} left out "
                     f"({', '.join(f'{k} {v}' for k, v in qc.get('skipped_by_code', {}).items()) or 'none'})")
    return "\n".join(lines).rstrip()


@corpus.command()
@click.argument("corpus_dir", metavar="CORPUS", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with per-patient counts).")
def info(corpus_dir: str, as_json: bool) -> None:
    """Counts of the corpus folder CORPUS by label, diagnosis, source, fold and patient."""
    from steth_hub.corpus import load_corpus

    summary = load_corpus(corpus_dir).summary()
    click.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))
