"""Experiment configs: which classifier, its settings, the preprocessing preset and the training recipe.

An experiment config is a YAML (or JSON) file in ``configs/``::

    name: ast-asthma
    classifier: ast            # a classifier plugin name (steth plugins)
    model: {...}               # passed to the plugin's Classifier.from_config
    preset: excerpt-10s        # a preset name, a YAML path, or an inline preset
    recipe:                    # training recipe; HF TrainingArguments names where they exist
      num_train_epochs: 25
      per_device_train_batch_size: 16
      learning_rate: 8.0e-5
      ...

``steth train`` and ``steth evaluate`` both read it, so a model and its evaluation are
made from one file. :func:`train_experiment` (``steth train``) trains one on a corpus and saves
the model folder; the training loop itself is :mod:`steth_hub.train`.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steth_hub.errors import ConfigError
from steth_hub.fileio import read_yaml_or_json

log = logging.getLogger(__name__)

KNOWN_KEYS = {"name", "classifier", "model", "preset", "recipe", "description", "evaluation", "stability_checks"}


@dataclass
class Experiment:
    """A parsed experiment config. ``source`` is the file it came from (for error messages)."""

    name: str
    classifier: str
    model: dict = field(default_factory=dict)
    preset: Any = "excerpt-10s"
    recipe: dict = field(default_factory=dict)
    description: str = ""
    evaluation: dict = field(default_factory=dict)
    source: str | None = None
    #: the stability checks a model trained from this config asks screening for (steth_hub/stability.py)
    stability_checks: list | None = None

    def to_dict(self) -> dict:
        out = {"name": self.name, "classifier": self.classifier, "model": copy.deepcopy(self.model),
               "preset": copy.deepcopy(self.preset), "recipe": copy.deepcopy(self.recipe),
               "description": self.description, "evaluation": copy.deepcopy(self.evaluation)}
        if self.stability_checks is not None:
            out["stability_checks"] = copy.deepcopy(self.stability_checks)
        return out

    def with_recipe(self, **overrides: Any) -> "Experiment":
        """A copy with some recipe values replaced (e.g. fewer epochs for a smoke run)."""
        new = copy.deepcopy(self)
        new.recipe.update(overrides)
        return new


def load_experiment(config: str | os.PathLike | dict) -> Experiment:
    """Read an experiment config from a YAML/JSON file or a dict; errors name the file and the key."""
    source = None
    if isinstance(config, dict):
        data = copy.deepcopy(config)
    else:
        path = Path(config)
        source = str(path)
        if not path.is_file():
            raise ConfigError("config file not found", path=path,
                              fix="pass a YAML file such as configs/ast-asthma.yaml")
        data = read_yaml_or_json(path, what="config")
    if not isinstance(data, dict):
        raise ConfigError("config must be a mapping of keys to values", path=source,
                          fix="start the file with keys such as 'classifier:' and 'recipe:'")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}", path=source,
                          fix=f"use only: {', '.join(sorted(KNOWN_KEYS))}")
    if not data.get("classifier") or not isinstance(data["classifier"], str):
        raise ConfigError("config needs 'classifier: <plugin name>'", path=source,
                          fix="add e.g. 'classifier: ast' (run `steth plugins` for names)")
    for key in ("model", "recipe", "evaluation"):
        if data.get(key) is None:
            data[key] = {}
        if not isinstance(data[key], dict):
            raise ConfigError(f"'{key}' must be a mapping", path=source, fix=f"indent the {key} settings under '{key}:'")
    from steth_hub.recipe import check_recipe_values  # light: numbers checked before any command does work

    check_recipe_values(data["recipe"], source=source)
    name = data.get("name") or (Path(source).stem if source else data["classifier"])
    checks = None
    if data.get("stability_checks") is not None:
        from steth_hub.errors import StethError
        from steth_hub.stability import check_list

        try:
            checks = [list(c) for c in check_list(data["stability_checks"])]
        except StethError as exc:
            raise ConfigError(f"stability_checks: {exc.message}", path=source, fix=exc.fix) from exc
    return Experiment(name=str(name), classifier=data["classifier"], model=data["model"],
                      preset=data.get("preset", "excerpt-10s"), recipe=data["recipe"],
                      description=str(data.get("description") or ""), evaluation=data["evaluation"],
                      source=source, stability_checks=checks)


# --------------------------------------------------------------------------- training an experiment on a corpus
def epochs_from_evaluation(report: dict) -> float | None:
    """Epochs for a final fit on every patient: the median best epoch over the folds (one decimal)."""
    per_fold = ((report.get("model") or {}).get("per_fold")) or []
    return _median_epoch([float(row["best_epoch"]) for row in per_fold if row.get("best_epoch") is not None])


def _median_epoch(best: list[float]) -> float | None:
    return round(float(np.median(best)), 1) if best else None


def fold_seed_facts(report: dict) -> dict:
    """What a final model takes from one cross-validation report: its fold seed, its out-of-fold
    threshold and its folds' best epochs."""
    protocol = report.get("protocol") if isinstance(report.get("protocol"), dict) else {}
    per_fold = ((report.get("model") or {}).get("per_fold")) or []
    return {"seed": protocol.get("seed"), "threshold": float(report["recommended_threshold"]),
            "best_epochs": [float(row["best_epoch"]) for row in per_fold if row.get("best_epoch") is not None]}


def combine_evaluations(reports: list[dict], *, experiment: str | None = None,
                        sources: list | None = None) -> dict:
    """The threshold and the stopping epoch of a final model from one or more fold seeds' reports.

    One report: its threshold and its folds' median best epoch (:func:`epochs_from_evaluation`).
    Several (the same recipe, different fold seeds): the median of their out-of-fold thresholds,
    and the median best epoch over all their folds; one fold seed's threshold is itself uncertain.
    A report of another experiment, or a fold seed given twice, is a :class:`ConfigError` naming
    the file (``sources``, in the order of ``reports``).
    """
    sources = list(sources) if sources is not None else [None] * len(reports)
    if not reports:
        raise ConfigError("no evaluation report given", fix="pass the evaluation.json of `steth evaluate`")
    seen: dict = {}
    facts = []
    for report, where in zip(reports, sources):
        name = (report.get("experiment") or {}).get("name") if isinstance(report.get("experiment"), dict) else None
        if experiment is not None and name is not None and str(name) != str(experiment):
            raise ConfigError(f"this evaluation report is of experiment {name!r}, not {experiment!r}", path=where,
                              fix=f"pass the evaluation.json that `steth evaluate` wrote for {experiment!r}")
        try:
            facts.append(fold_seed_facts(report))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a usable evaluation report ({type(exc).__name__}: {exc})", path=where,
                              fix="pass the evaluation.json written by `steth evaluate`") from exc
        seed = facts[-1]["seed"]
        if len(reports) > 1 and seed is None:
            raise ConfigError("this evaluation report does not say its fold seed (protocol.seed)", path=where,
                              fix="pass evaluation.json files written by `steth evaluate --seed S`")
        if len(reports) > 1 and seed in seen:
            raise ConfigError(f"fold seed {seed} is given twice (also in {seen[seed] or 'another report'})",
                              path=where, fix="pass each fold seed's evaluation.json once")
        seen[seed] = where
    if len(facts) == 1:
        threshold_from = "cross-validation: max Youden's J on the pooled out-of-fold recording probabilities"
    else:
        threshold_from = (f"cross-validation: the median over fold seeds {', '.join(str(f['seed']) for f in facts)} "
                          "of each seed's max Youden's J on its pooled out-of-fold recording probabilities")
    return {"threshold": float(np.median([f["threshold"] for f in facts])),  # one report: its own
            "epochs": _median_epoch([e for f in facts for e in f["best_epochs"]]),
            "threshold_from": threshold_from, "fold_seeds": facts}


def read_evaluation(path: str | os.PathLike) -> dict:
    """An ``evaluation.json`` written by ``steth evaluate`` (errors name the file)."""
    import json

    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        float(report["recommended_threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"not a usable evaluation report ({type(exc).__name__}: {exc})", path=path,
                          fix="pass the evaluation.json written by `steth evaluate`") from exc
    return report


def train_experiment(config, corpus, out: str | os.PathLike, *, progress: bool = True, **kwargs) -> tuple[Any, dict]:
    """Train the experiment ``config`` on a corpus folder (or loaded corpus) and save the model folder ``out``.

    The corpus is preprocessed with the experiment's preset (clips cached with the corpus), then
    :func:`train_on_clips` does the rest; see it for the keyword arguments.
    """
    from steth_hub.preprocess import cached_clips, load_preset

    from steth_hub.recipe import check_recipe

    experiment = load_experiment(config)
    check_recipe(experiment.recipe, source=experiment.source)
    if isinstance(corpus, (str, os.PathLike)):
        from steth_hub.corpus import load_corpus

        corpus = load_corpus(corpus)
    preset = load_preset(experiment.preset)
    clips, skipped, _ = cached_clips(corpus, preset, progress=progress)
    if (experiment.evaluation or {}).get("train_sources"):  # the same restriction as its cross-validation
        from steth_hub.corpus.splits import patient_sources, recording_info, training_sources

        sources_of = patient_sources(clips, recording_info(corpus))
        allowed = training_sources(experiment.evaluation, sources_of, where=experiment.source or experiment.name)
        kept = sorted(p for p, src in sources_of.items() if src in allowed)
        if progress:
            log.info("training on the %d patients of %s only (evaluation.train_sources)", len(kept), sorted(allowed))
        clips = clips.for_patients(kept)
    corpus_facts = {"path": os.fspath(getattr(corpus, "path", "") or ""),
                    "info": dict(getattr(corpus, "info", None) or {}), "skipped_recordings": len(skipped)}
    # who the model learnt from (sex, age bands, sources...) is counted by train_on_clips, after any validation split
    return train_on_clips(experiment, clips, out, preset=preset, corpus=corpus_facts, progress=progress,
                          dataset=getattr(corpus, "dataset", None), **kwargs)


def train_on_clips(experiment, clips, out: str | os.PathLike, *, preset=None, corpus: dict | None = None,
                   resume: bool = False, epochs: float | None = None, valid_fraction: float | None = None,
                   evaluation: str | os.PathLike | dict | None = None, checkpoints: str | os.PathLike | None = None,
                   seed: int | None = None, progress: bool = True, name: str | None = None,
                   overwrite: bool = False, dataset=None) -> tuple[Any, dict]:
    """Train an experiment's classifier on preprocessed clips and save it to ``out``.

    ``out`` must be new, empty or a steth-hub model folder (``overwrite=True`` replaces any
    other folder), and never the corpus, the config or anything that contains them; this is
    checked before any work starts (:func:`steth_hub.fileio.check_output_folder`).

    * ``valid_fraction`` (default: 0.2 when the recipe early-stops, else 0): that share of the
      patients, stratified by label, is held out for early stopping and the threshold;
      with 0 every patient trains for the recipe's epochs.
    * ``evaluation``: a cross-validation report (``evaluation.json`` of ``steth evaluate``, or
      its dict), or a list of them (fold seeds of the same recipe). The threshold becomes the
      maximum Youden's J on the pooled out-of-fold recording probabilities (honest unseen
      predictions; with several reports, the median over them); unless ``epochs`` is given,
      training stops at the median best epoch of the folds on the recipe's own schedule (as each
      fold did). The first report is stored in ``steth.json``, each seed's threshold and best epochs
      under ``training.fold_seeds`` (:func:`combine_evaluations`).
    * Checkpoints go to ``checkpoints`` (default ``OUT.checkpoints``); ``resume`` continues from the
      last one.
    * ``dataset``: the corpus rows; the card's training-data summary then counts exactly the
      recordings and patients the model was fitted on (the validation patients are counted apart).

    Returns ``(classifier, history)``.
    """
    from steth_hub.preprocess import load_preset
    from steth_hub.registry import get_registry

    experiment = load_experiment(experiment) if not hasattr(experiment, "recipe") else experiment
    check_model_output(out, experiment=experiment, corpus=(corpus or {}).get("path") or None,
                       evaluation=evaluation, checkpoints=checkpoints, overwrite=overwrite)
    preset = load_preset(preset if preset is not None else experiment.preset)
    recipe = dict(experiment.recipe)
    given = list(evaluation) if isinstance(evaluation, (list, tuple)) else ([] if evaluation is None else [evaluation])
    reports = [read_evaluation(e) if isinstance(e, (str, os.PathLike)) else e for e in given]
    combined = (combine_evaluations(reports, experiment=experiment.name,
                                    sources=[e if isinstance(e, (str, os.PathLike)) else None for e in given])
                if reports else None)
    report = reports[0] if reports else None
    stop = combined["epochs"] if epochs is None and combined is not None else None
    if stop is not None:  # the folds' schedule, stopped where the folds were best
        recipe["stop_at_epoch"] = min(stop, float(recipe.get("num_train_epochs", stop)))
    if epochs is not None:
        recipe["num_train_epochs"] = float(epochs)
    if seed is not None:
        recipe["seed"] = int(seed)
    if resume:
        recipe["resume"] = True
    if not progress:
        recipe.setdefault("disable_tqdm", True)
    from steth_hub.recipe import check_recipe

    recipe = check_recipe(recipe, source=experiment.source)

    if valid_fraction is None:
        valid_fraction = 0.2 if recipe.get("early_stopping_patience") else 0.0
    train_set, valid_set = clips, None
    if valid_fraction > 0:
        from steth_hub.corpus.splits import patient_labels, validation_split

        labels = patient_labels(list(clips.patient_ids), list(clips.labels))
        train_p, valid_p = validation_split(sorted(labels), labels, float(valid_fraction), int(recipe["seed"]))
        train_set, valid_set = clips.for_patients(train_p), clips.for_patients(valid_p)

    cls = get_registry().get("classifier", experiment.classifier).load()
    model = cls.from_config(dict(experiment.model))
    model.preset = preset.to_dict()
    out = Path(out)
    work = Path(checkpoints) if checkpoints else out.with_name(out.name + ".checkpoints")
    history = model.fit(train_set, valid_set, recipe, work)

    if combined is not None:
        model.threshold = combined["threshold"]
        history["threshold"] = model.threshold
        history["threshold_from"] = combined["threshold_from"]
    model.metadata["training"] = dict(model.metadata.get("training") or {}, **{
        "experiment": experiment.to_dict(),
        "recipe": {k: v for k, v in recipe.items() if k != "resume"},
        "corpus": _trained_on(corpus, dataset, train_set, valid_set),
        "preset": preset.name,
        "validation_fraction": float(valid_fraction),
        "validation_patients": int(len(np.unique(valid_set.patient_ids))) if valid_set is not None else 0,
        "epochs_from": ("stopped at the median best epoch of the cross-validation folds, on the recipe's schedule"
                        if stop is not None else "recipe or command line"),
        "threshold_from": history.get("threshold_from"),
        **({"fold_seeds": combined["fold_seeds"]} if combined is not None else {}),
        "train_loss": history.get("train_loss"),
        "device": history.get("device"),
        "train_seconds": history.get("train_seconds"),
        "clips_per_second": history.get("clips_per_second"),
    })
    if name:
        model.metadata["name"] = name
    if experiment.stability_checks is not None:  # what screening re-checks for this model
        model.metadata["stability_checks"] = copy.deepcopy(experiment.stability_checks)
    if report is not None:
        model.metadata["evaluation"] = report
    model.save_pretrained(out)
    from steth_hub.onnx_export import export_after_training

    export_after_training(model, out)  # model.onnx beside the weights, for classifiers that opt in
    return model, history


def check_model_output(out, *, experiment=None, corpus=None, evaluation=None, checkpoints=None,
                       overwrite: bool = False) -> Path:
    """The model folder ``out`` may be written: not an input (corpus, config, evaluation report,
    checkpoints) nor a folder holding one; new, empty, a steth-hub model, or ``overwrite``."""
    from steth_hub.classifier import STETH_METADATA
    from steth_hub.fileio import check_output_folder

    inputs = [corpus, getattr(experiment, "source", None), checkpoints]
    for report in (evaluation if isinstance(evaluation, (list, tuple)) else [evaluation]):
        if isinstance(report, (str, os.PathLike)):
            inputs.append(report)
    return check_output_folder(out, [i for i in inputs if i], markers=(STETH_METADATA,), overwrite=overwrite,
                               what="model")


def _trained_on(corpus: dict | None, dataset, train_set, valid_set) -> dict:
    """The corpus facts of ``steth.json``: counts of what the model was FITTED on (a validation split's
    patients are counted under ``validation``, not as training data)."""
    facts = dict(corpus or {}, recordings_by_label=_by_label(train_set, train_set.recording_ids),
                 patients_by_label=_by_label(train_set, train_set.patient_ids))
    if valid_set is not None:
        facts["validation"] = {"recordings_by_label": _by_label(valid_set, valid_set.recording_ids),
                               "patients_by_label": _by_label(valid_set, valid_set.patient_ids)}
    if dataset is not None:
        from steth_hub.card import summarise_training_data

        fitted = set(np.asarray(train_set.recording_ids).astype(str).tolist())  # not skipped, filtered or held out
        used = [i for i, rid in enumerate(dataset["recording_id"]) if str(rid) in fitted]
        facts["data"] = summarise_training_data(dataset.select(used))
    return facts


def _by_label(clips, groups) -> dict:
    """How many distinct groups (recordings or patients) carry each label."""
    _, first = np.unique(np.asarray(groups).astype(str), return_index=True)
    labels = clips.labels[first]
    return {"not_asthma": int((labels == 0).sum()), "asthma": int((labels == 1).sum())}
