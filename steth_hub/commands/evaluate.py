"""``steth evaluate``: patient-grouped cross-validation with intervals, and comparison tables of runs.

    steth evaluate --config configs/ast-asthma.yaml --corpus corpora/all --out runs/ast
    steth evaluate --compare runs/ast/evaluation.json runs/densenet/evaluation.json

The first writes ``runs/ast/evaluation.json`` and ``oof_predictions.csv`` and prints the
table (the MFCC baseline beside the model); the second prints (or writes) the patient-level
Markdown comparison used in model cards. Everything heavy is imported when it runs.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--config", "configs", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              help="Experiment config (configs/*.yaml): classifier, model, preset, recipe. Repeat it to "
                   "evaluate several models: each goes to OUT/<name>/ and OUT/comparison.md compares them.")
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Corpus folder written by `steth corpus import` (its splits.json gives the folds).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder for evaluation.json, oof_predictions.csv and the fold models' training files.")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="Make K seeded stratified patient folds instead of the corpus's stored folds.")
@click.option("--no-baseline", is_flag=True, help="Do not score the MFCC + logistic-regression baseline.")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=1), default=None, show_default=False,
              help="Patient-bootstrap resamples per interval [default: 2000; 200 with --quick].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of folds, validation splits, bootstrap.")
@click.option("--quick", is_flag=True,
              help="Smoke run: one epoch (pretraining too) and 200 resamples; the output says it is not a result.")
@click.option("--compare", is_flag=True,
              help="Instead of evaluating: print the patient-level comparison table of REPORTS (Markdown).")
@click.option("--to", "to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --compare: also write the table to this file.")
@click.option("--level", type=click.Choice(["patient", "recording", "clip"]), default="patient", show_default=True,
              help="With --compare: the level of the table.")
@click.option("--overwrite", is_flag=True,
              help="Write into OUT even if it is a non-empty folder that is not a steth-hub evaluation "
                   "(never allowed when OUT is or contains the corpus or a config).")
@click.argument("reports", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
def evaluate(configs, corpus, out, folds, no_baseline, n_bootstrap, seed, quick, compare, to, level, overwrite,
             reports) -> None:
    """Patient-grouped cross-validation of a classifier, beside the MFCC baseline, with 95% intervals.

    Each fold's model is trained on the other folds' patients; its threshold (max Youden's J)
    is chosen on validation patients split off those, never on the fold it is scored on.
    Metrics per clip, recording and patient come with percentile bootstrap intervals over
    patients.
    """
    if compare:
        _compare(reports, to, level)
        return
    if reports:
        raise click.UsageError("REPORTS are only read with --compare")
    missing = [name for name, value in (("--config", configs), ("--corpus", corpus), ("--out", out)) if not value]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or use --compare REPORTS...)")
    from steth_hub.evaluate import check_experiment, cross_validate
    from steth_hub.evaluation_report import REPORT_FILE, format_table

    experiments = [check_experiment(c) for c in configs]  # every config checked before hours of training
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise click.UsageError(f"two configs share a name ({', '.join(names)}); each run needs its own folder")
    from steth_hub.fileio import check_output_folder

    # before hours of training: OUT may not be an input nor a folder of someone else's files
    markers = (REPORT_FILE, "comparison.md", "folds")
    check_output_folder(out, [corpus, *configs], markers=markers, overwrite=overwrite, what="evaluation")
    if len(experiments) > 1:
        for experiment in experiments:
            check_output_folder(out / experiment.name, [corpus, *configs], markers=markers, overwrite=overwrite,
                                what="evaluation")
    runs = []
    for experiment in experiments:
        run_dir = out if len(experiments) == 1 else out / experiment.name
        if len(experiments) > 1:
            click.echo(f"== {experiment.name} -> {run_dir}", err=True)
        report = cross_validate(corpus, experiment, folds=folds, out_dir=run_dir, baseline=not no_baseline,
                                n_bootstrap=n_bootstrap or (200 if quick else 2000), seed=seed,
                                progress=lambda msg: click.echo(msg, err=True), quick=quick)
        click.echo(format_table(report))
        if report.get("skipped"):
            click.echo(f"{len(report['skipped'])} recording(s) were skipped in preprocessing; "
                       f"see 'skipped' in {run_dir / REPORT_FILE}", err=True)
        runs.append(run_dir / REPORT_FILE)
    if len(runs) > 1:
        click.echo("")
        _compare(runs, out / "comparison.md", level)


def _compare(reports, to, level) -> None:
    from steth_hub.evaluation_report import comparison_table
    from steth_hub.fileio import atomic_write_text

    if not reports:
        raise click.UsageError("--compare needs one or more evaluation.json files")
    table = comparison_table(reports, level=level)
    click.echo(table)
    if to is not None:
        atomic_write_text(to, table + "\n")
        click.echo(f"wrote {to}", err=True)
