"""``steth train``: train a classifier from an experiment config on a corpus, with progress."""

from __future__ import annotations

import click


@click.command()
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False),
              help="Experiment config (configs/ast-asthma.yaml, configs/paper.yaml, configs/densenet201.yaml).")
@click.option("--corpus", required=True, type=click.Path(file_okay=False),
              help="Corpus folder written by `steth corpus import` / `merge`.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--resume", is_flag=True, help="Continue a stopped run from its last checkpoint.")
@click.option("--epochs", type=float, default=None,
              help="Epochs of the labelled stage (overrides the recipe's num_train_epochs); "
                   "a recipe's pretrain.epochs is left unchanged.")
@click.option("--valid-fraction", type=float, default=None,
              help="Share of patients held out for early stopping and the threshold "
                   "(default 0.2 when the recipe early-stops, else 0: train on every patient).")
@click.option("--evaluation", type=click.Path(dir_okay=False), multiple=True,
              help="evaluation.json of `steth evaluate` on this config: the threshold (max Youden's J on the "
                   "pooled out-of-fold recordings) comes from it; unless --epochs is given, training stops at "
                   "the folds' median best epoch on the recipe's schedule; the report goes into steth.json. "
                   "Repeat it for several fold seeds: the median of their thresholds, the median best epoch "
                   "over all their folds.")
@click.option("--checkpoints", type=click.Path(file_okay=False), default=None,
              help="Checkpoint folder (default OUT.checkpoints).")
@click.option("--seed", type=int, default=None, help="Override the recipe's seed.")
@click.option("--name", default=None, help="Name recorded in steth.json (e.g. steth/ast-asthma).")
@click.option("--overwrite", is_flag=True,
              help="Replace OUT even if it is a non-empty folder that is not a steth-hub model "
                   "(never allowed when OUT is or contains the corpus or the config).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(config, corpus, out, resume, epochs, valid_fraction, evaluation, checkpoints, seed, name, overwrite, quiet):
    """Train the classifier of CONFIG on CORPUS and save it to OUT (safetensors + steth.json).

    OUT must be new, empty or an earlier steth-hub model folder (it is replaced only when the
    new model is complete); any other folder needs --overwrite.
    """
    from steth_hub.experiment import load_experiment
    from steth_hub.experiment import check_model_output, train_experiment

    # before any work: OUT may not swallow an input nor a folder of someone else's files
    evaluation = list(evaluation) or None
    check_model_output(out, experiment=load_experiment(config), corpus=corpus, evaluation=evaluation,
                       checkpoints=checkpoints, overwrite=overwrite)
    model, history = train_experiment(config, corpus, out, resume=resume, epochs=epochs,
                                      valid_fraction=valid_fraction, evaluation=evaluation,
                                      checkpoints=checkpoints, seed=seed, progress=not quiet, name=name,
                                      overwrite=overwrite)
    click.echo(training_summary(model, history))
    click.echo(f"threshold {model.threshold:.3f} ({history.get('threshold_from')})")
    click.echo(f"saved {out}")


def training_summary(model, history: dict) -> str:
    """One line on what was trained; models without epochs (the MFCC baseline) have no steps to report."""
    parts = [f"trained {model.plugin_name} on {history.get('n_train_clips', '?')} clips"]
    details = []
    if history.get("resumed_from"):
        details.append(f"resumed from {history['resumed_from']}")
    if history.get("global_step") is not None:
        details.append(f"{history['global_step']} steps")
    if history.get("epochs") is not None:
        details.append(f"{float(history['epochs']):.1f} epochs" + (" (stopped early)" if history.get("stopped_early") else ""))
    if history.get("clips_per_second") is not None:
        details.append(f"{float(history['clips_per_second']):.1f} clips/s on {history.get('device', 'cpu')}")
    if history.get("n_features") is not None:
        details.append(f"{history['n_features']} features per clip")
    return parts[0] + (": " + ", ".join(details) if details else "")
