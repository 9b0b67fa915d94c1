"""Where a classifier is evaluated: patient-grouped cross-validation against the MFCC baseline.

:func:`cross_validate` preprocesses a corpus once, then for each patient fold ``k``:

1. the scored patients are fold ``k``; the training patients are all the others;
2. an inner validation set (about 20 % of the training patients, stratified by patient
   label, seeded) is split off the training patients - for early stopping and for the
   decision threshold;
3. a fresh classifier (the experiment's plugin) is fitted on the training clips;
4. the threshold is Youden's J on the *validation* recordings' probabilities;
5. the scored fold's clips are predicted.

Nothing is ever chosen on the fold that is scored. The out-of-fold predictions are then
pooled and scored at three levels - clip, recording (mean of its clips) and patient (mean
of its recordings) - each with a percentile bootstrap interval over patients, using each
fold's own threshold for the decisions. The MFCC + logistic-regression baseline runs on
the same folds, splits and clips, so the report shows the gap to it.

The report (``evaluation.json``) and the out-of-fold predictions (``oof_predictions.csv``)
are written atomically into ``out_dir`` by :mod:`steth_hub.evaluation_report`, which also reads
reports back and renders their tables (console, Markdown comparison for model cards).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from steth_hub import metrics
from steth_hub.corpus import splits
# the split helpers live with the folds (kept importable from here)
from steth_hub.corpus.splits import (  # noqa: F401
    patient_sources, recording_info, training_sources, validation_split,
)
# the report's files and its tables (kept importable from here)
from steth_hub.evaluation_report import (  # noqa: F401
    OOF_FILE, REPORT_FILE, REPORT_FORMAT, comparison_table, format_table, format_value,
    source_warnings, write_report,
)
from steth_hub.errors import ConfigError, CorpusError

BASELINE_CLASSIFIER = "mfcc-logreg"
LEVELS: tuple[str, ...] = ("clip", "recording", "patient")
#: recipe overrides of a ``--quick`` smoke run (its numbers are not results); a recipe's
#: self-supervised ``pretrain`` stage is also cut to this many epochs (see :func:`quick_recipe`)
QUICK_RECIPE = {"num_train_epochs": 1}
QUICK_PRETRAIN_EPOCHS = 1
#: fraction of the training patients held out for early stopping and the threshold
DEFAULT_VALIDATION_FRACTION = 0.2
#: diagnoses kept in the "asthma vs normal" subgroup
ASTHMA_VS_NORMAL = ("asthma", "normal")

Progress = Callable[[str], None]


def quick_recipe(recipe: Mapping[str, Any]) -> dict:
    """The overrides that make ``recipe`` a ``--quick`` smoke run: one labelled epoch, and at
    most one epoch of its ``pretrain`` stage where it has one (its other settings kept)."""
    overrides = dict(QUICK_RECIPE)
    pretrain = recipe.get("pretrain")
    if isinstance(pretrain, Mapping) and pretrain.get("epochs"):
        overrides["pretrain"] = {**pretrain, "epochs": min(pretrain["epochs"], QUICK_PRETRAIN_EPOCHS)}
    return overrides


# --------------------------------------------------------------------------- folds
def patient_labels(clips) -> dict[str, int]:
    """One label per patient of a ClipSet (:func:`steth_hub.corpus.splits.patient_labels`)."""
    return splits.patient_labels(list(clips.patient_ids), list(clips.labels))


def make_folds(clips, n_folds: int, seed: int = 0) -> dict[str, int]:
    """Patient -> fold for a ClipSet (:func:`steth_hub.corpus.splits.patient_folds`, recordings in
    the order they appear), the folds of ``steth evaluate --folds K --seed S``."""
    return splits.patient_folds(list(clips.patient_ids), list(clips.labels), n_folds=int(n_folds), seed=int(seed),
                                recording_ids=list(clips.recording_ids))


def corpus_folds(corpus) -> dict[str, int]:
    """The patient folds stored with a corpus (``splits.json``; ``.splits`` on a loaded corpus)."""
    splits = getattr(corpus, "splits", None)
    if isinstance(splits, Mapping) and isinstance(splits.get("folds"), Mapping):
        splits = splits["folds"]
    if not isinstance(splits, Mapping) or not splits:
        raise CorpusError("the corpus has no patient folds", path=getattr(corpus, "path", None),
                          fix="re-import the corpus (it writes splits.json), or pass --folds K to make folds")
    return {str(p): int(k) for p, k in splits.items()}


def folds_fingerprint(folds: Mapping[str, int]) -> str:
    """A short hash of the patient -> fold assignment: equal fingerprints mean the same folds."""
    text = json.dumps(sorted((str(p), int(k)) for p, k in folds.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- models
@dataclass
class Contender:
    """One model scored in the run: a name for the report, its plugin and how to build a fresh one."""

    name: str
    classifier: str
    config: dict
    role: str  # "model" or "baseline"


def _classifier_class(name: str):
    from steth_hub.registry import get_registry

    return get_registry().get("classifier", name).load()


def _fresh(contender: Contender, preset: Any):
    model = _classifier_class(contender.classifier).from_config(dict(contender.config))
    model.preset = preset if isinstance(preset, dict) else {"name": str(preset)}
    return model


def _check_rate(model, contender: Contender, sample_rate: int) -> None:
    """Classifiers adopt the training clips' rate in ``fit``; one that did not would mis-read every clip."""
    if int(model.sample_rate) != int(sample_rate):
        raise ConfigError(f"classifier {contender.classifier!r} works at {model.sample_rate} Hz but the preset "
                          f"makes clips at {sample_rate} Hz",
                          fix="use a preset that resamples to the classifier's rate, or set the model's sample_rate")


def _history_summary(history: Any) -> dict:
    """The scalar facts of a training history (epochs, best epoch, stopped early...), JSON-safe."""
    if not isinstance(history, Mapping):
        return {}
    out = {k: v for k, v in history.items()
           if isinstance(v, (int, float, str, bool)) or v is None}
    for k, v in history.items():
        if isinstance(v, Mapping) and all(isinstance(x, (int, float, str, bool)) or x is None for x in v.values()):
            out[k] = dict(v)
    best = history.get("best_epoch")
    if best is None and history.get("best_checkpoint") and isinstance(history.get("log_history"), list):
        step = str(history["best_checkpoint"]).rstrip("/").rsplit("-", 1)[-1]
        for entry in history["log_history"]:
            if str(entry.get("step")) == step and entry.get("epoch") is not None:
                best = entry["epoch"]
    if best is not None:
        out["best_epoch"] = float(best)
    return out


# --------------------------------------------------------------------------- scoring
def level_tables(recording_ids, patient_ids, labels, folds, prob, thresholds) -> dict[str, dict]:
    """Clip predictions -> arrays per level (clip, recording = mean of clips, patient = mean of recordings).

    Each level is ``{"ids", "labels", "prob", "threshold", "patients", "folds"}``.
    """
    rec = np.asarray(recording_ids, dtype=object)
    clip = {"ids": np.arange(len(rec)).astype(object), "labels": np.asarray(labels, dtype=np.int64),
            "prob": np.asarray(prob, dtype=np.float64), "threshold": np.asarray(thresholds, dtype=np.float64),
            "patients": np.asarray(patient_ids, dtype=object), "folds": np.asarray(folds, dtype=np.int64)}
    out = {"clip": clip}
    parent, parent_groups = clip, rec
    for level, key in (("recording", None), ("patient", "patients")):
        groups = parent_groups if key is None else parent[key]
        ids, prob_mean = metrics.aggregate(parent["prob"], groups)
        table = {"ids": ids, "prob": prob_mean}
        for column in ("labels", "threshold", "patients", "folds"):
            table[column] = metrics.group_value(parent[column], groups)[1]
        table["labels"] = table["labels"].astype(np.int64)
        table["threshold"] = table["threshold"].astype(np.float64)
        table["folds"] = table["folds"].astype(np.int64)
        out[level] = table
        parent = table
    return out


def _score_levels(tables: Mapping[str, dict], n_bootstrap: int, seed: int, alpha: float) -> dict:
    return {level: metrics.bootstrap_ci(t["labels"], t["prob"], t["threshold"], groups=t["patients"],
                                        n=n_bootstrap, seed=seed, alpha=alpha)
            for level, t in tables.items()}


def _subset(table: dict, mask) -> dict:
    return {k: np.asarray(v)[mask] for k, v in table.items()}


def _per_fold(tables: Mapping[str, dict], thresholds: Mapping[int, float]) -> list[dict]:
    rows = []
    for k in sorted(thresholds):
        row = {"fold": int(k), "threshold": thresholds[k]}
        for level in ("recording", "patient"):
            t = _subset(tables[level], tables[level]["folds"] == k)
            row[level] = metrics.binary_metrics(t["labels"], t["prob"], t["threshold"])
        rows.append(row)
    return rows


def _subgroups(tables: Mapping[str, dict], recording_info: Mapping[str, Mapping], n_bootstrap: int, seed: int,
               alpha: float) -> dict:
    """Patient-level metrics by source, and on asthma and normal patients only."""
    patient = tables["patient"]
    rec = tables["recording"]
    sources: dict[str, set] = {}
    diagnoses: dict[str, set] = {}
    for rid, pid in zip(rec["ids"], rec["patients"]):
        info = recording_info.get(str(rid), {})
        sources.setdefault(pid, set()).add(info.get("source") or str(pid).split(":", 1)[0])
        diagnoses.setdefault(pid, set()).add(info.get("diagnosis_normalised"))
    groups: dict[str, np.ndarray] = {}
    for source in sorted({s for ss in sources.values() for s in ss}):
        groups[f"source={source}"] = np.array([sources[p] == {source} for p in patient["ids"]])
    if any(d != {None} for d in diagnoses.values()):
        groups["asthma-vs-normal"] = np.array([diagnoses[p] <= set(ASTHMA_VS_NORMAL) for p in patient["ids"]])
    out = {}
    for name, mask in groups.items():
        if mask.any():
            t = _subset(patient, mask)
            out[name] = metrics.bootstrap_ci(t["labels"], t["prob"], t["threshold"], groups=t["patients"],
                                             n=n_bootstrap, seed=seed, alpha=alpha)
    return out


def _counts(clips) -> dict:
    def by_label(ids, labels):
        ids, labels = np.asarray(ids), np.asarray(labels).astype(np.int64)
        return {"total": int(len(ids)), "asthma": int((labels == 1).sum()), "not_asthma": int((labels == 0).sum())}

    rec_ids, rec_labels = metrics.group_value(clips.labels.astype(np.int64), clips.recording_ids)
    pat_ids, pat_labels = metrics.group_value(clips.labels.astype(np.int64), clips.patient_ids)
    return {"clips": by_label(clips.recording_ids, clips.labels), "recordings": by_label(rec_ids, rec_labels),
            "patients": by_label(pat_ids, pat_labels)}


# --------------------------------------------------------------------------- the run
def _progress(progress: bool | Progress) -> Progress:
    if callable(progress):
        return progress
    if progress:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return lambda msg: None


def cross_validate_clips(clips, experiment, *, folds: Mapping[str, int] | None = None, n_folds: int | None = None,
                         out_dir: str | os.PathLike, baseline: bool = True, n_bootstrap: int = 2000, seed: int = 0,
                         alpha: float = 0.05, progress: bool | Progress = True, quick: bool = False,
                         recording_info: Mapping[str, Mapping] | None = None, context: Mapping | None = None) -> dict:
    """Cross-validate on an already preprocessed :class:`~steth_hub.clips.ClipSet` (see :func:`cross_validate`).

    Args:
        clips: the clips of every recording, with labels, recording and patient ids.
        experiment: an :class:`~steth_hub.experiment.Experiment` or a config path/dict.
        folds: patient -> fold; or ``n_folds`` to make seeded stratified patient folds.
        recording_info: recording id -> ``{"source", "diagnosis_normalised"}`` for the subgroups.
        context: extra facts merged into the report (the corpus, skipped recordings...).
    """
    from steth_hub.experiment import Experiment, load_experiment

    say = _progress(progress)
    if not isinstance(experiment, Experiment):
        experiment = load_experiment(experiment)
    if quick:
        experiment = experiment.with_recipe(**quick_recipe(experiment.recipe))
    evaluation = dict(experiment.evaluation or {})
    fraction = float(evaluation.get("validation_fraction", DEFAULT_VALIDATION_FRACTION))
    out_dir = Path(out_dir)
    started = time.time()

    labels_of = patient_labels(clips)
    if folds is None:
        if not n_folds:
            raise ConfigError("no folds given", fix="pass the corpus's folds, or n_folds (--folds K)")
        folds, folds_from = make_folds(clips, int(n_folds), seed), "recomputed"
    else:
        folds_from = "corpus"
    folds = {str(p): int(k) for p, k in folds.items()}
    missing = sorted(set(labels_of) - set(folds))
    if missing:
        raise CorpusError(f"{len(missing)} patient(s) have no fold, e.g. {missing[0]}",
                          fix="re-import the corpus so splits.json covers every patient, or pass --folds K")
    folds = {p: folds[p] for p in labels_of}  # patients whose recordings were all skipped drop out
    fold_ids = sorted(set(folds.values()))
    if len(fold_ids) < 2:
        raise ConfigError("cross-validation needs at least two folds with patients",
                          fix="import a corpus with more patients, or pass --folds K")

    contenders = [Contender(experiment.name, experiment.classifier, dict(experiment.model), "model")]
    if baseline and experiment.classifier != BASELINE_CLASSIFIER:
        contenders.append(Contender(f"{BASELINE_CLASSIFIER} (baseline)", BASELINE_CLASSIFIER,
                                    dict(evaluation.get("baseline") or {}), "baseline"))

    clip_patients = clips.patient_ids.astype(str)
    clip_folds = np.array([folds[p] for p in clip_patients], dtype=np.int64)
    oof = {c.name: {"prob": np.full(len(clips), np.nan), "threshold": np.full(len(clips), np.nan)}
           for c in contenders}
    fold_records: list[dict] = []
    thresholds: dict[str, dict[int, float]] = {c.name: {} for c in contenders}
    histories: dict[str, dict[int, dict]] = {c.name: {} for c in contenders}
    sources_of = patient_sources(clips, recording_info)
    train_sources = training_sources(evaluation, sources_of, where=experiment.source or experiment.name)
    for i, k in enumerate(fold_ids):
        test_p = sorted(p for p, f in folds.items() if f == k)
        rest = sorted(p for p, f in folds.items() if f != k)
        if train_sources is not None:  # trained on these sources only; every held-out patient is still scored
            rest = [p for p in rest if sources_of[p] in train_sources]
        train_p, valid_p = validation_split(rest, labels_of, fraction, seed + int(k))
        train, valid = clips.for_patients(train_p), clips.for_patients(valid_p)
        scored = clip_folds == k
        test = clips.subset(scored)
        record = {"fold": int(k), "patients": {"train": train_p, "valid": valid_p, "test": test_p},
                  "clips": {"train": len(train), "valid": len(valid), "test": len(test)}, "warnings": []}
        if len(set(valid.labels.tolist())) < 2:
            record["warnings"].append(f"the validation patients have one label only: the threshold fell back to "
                                      f"{metrics.FALLBACK_THRESHOLD}")
            say(f"fold {k}: warning: {record['warnings'][-1]}")
        fold_records.append(record)
        for c in contenders:
            say(f"fold {i + 1}/{len(fold_ids)}: {c.name}: training on {len(train_p)} patients ({len(train)} clips), "
                f"validating on {len(valid_p)}, scoring {len(test_p)} ({len(test)} clips)")
            model = _fresh(c, experiment.preset)
            history = model.fit(train, valid, dict(experiment.recipe), out_dir / "folds" / f"fold-{k}" / _slug(c.name))
            _check_rate(model, c, clips.sample_rate)
            thr = metrics.recording_threshold(valid.labels, model.predict_proba(valid.waveforms), valid.recording_ids)
            thresholds[c.name][int(k)] = thr
            histories[c.name][int(k)] = _history_summary(history)
            oof[c.name]["prob"][scored] = model.predict_proba(test.waveforms)
            oof[c.name]["threshold"][scored] = thr

    say(f"scoring pooled out-of-fold predictions ({n_bootstrap} patient-bootstrap resamples)")
    results: dict[str, dict] = {}
    tables_of: dict[str, dict] = {}
    for c in contenders:
        tables = level_tables(clips.recording_ids, clip_patients, clips.labels, clip_folds,
                              oof[c.name]["prob"], oof[c.name]["threshold"])
        tables_of[c.name] = tables
        per_fold = _per_fold(tables, thresholds[c.name])
        for row in per_fold:
            row["history"] = histories[c.name][row["fold"]]
            if "best_epoch" in row["history"]:
                row["best_epoch"] = row["history"]["best_epoch"]
        rec = tables["recording"]
        results[c.name] = {
            "name": c.name, "classifier": c.classifier, "config": c.config,
            "levels": _score_levels(tables, n_bootstrap, seed, alpha),
            "thresholds": {str(k): v for k, v in thresholds[c.name].items()},
            "recommended_threshold": metrics.youden_threshold(rec["labels"], rec["prob"]),
            "per_fold": per_fold,
            "subgroups": _subgroups(tables, recording_info or {}, n_bootstrap, seed, alpha),
        }

    model_result = results[contenders[0].name]
    base_result = results[contenders[1].name] if len(contenders) > 1 else None
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "name": experiment.name,
        "quick": bool(quick),
        "method": f"{len(fold_ids)}-fold patient-grouped cross-validation",
        "n_folds": len(fold_ids),
        "n_bootstrap": int(n_bootstrap),
        "protocol": {
            "folds_from": folds_from,
            "folds_fingerprint": folds_fingerprint(folds),
            "seed": int(seed),
            "validation_fraction": fraction,
            "train_sources": sorted(train_sources) if train_sources is not None else "all",
            "threshold": "max Youden's J on the validation patients' recording-level probabilities, per fold",
            "aggregation": "recording = mean of its clips; patient = mean of its recordings",
            "bootstrap": {"n": int(n_bootstrap), "alpha": float(alpha), "unit": "patient",
                          "interval": "percentile"},
        },
        "experiment": experiment.to_dict(),
        "counts": _counts(clips),
        "model": model_result,
        "baseline": base_result,
        "recommended_threshold": model_result["recommended_threshold"],
        "folds": fold_records,
        "files": {"oof": OOF_FILE},
    }
    if base_result is not None:
        report["gap"] = _gap(model_result, base_result, tables_of[contenders[0].name],
                             tables_of[contenders[1].name], n_bootstrap, seed, alpha)
    if quick:
        report["warning"] = "QUICK SMOKE RUN (fewer epochs): these numbers are not an evaluation result"
    report.update(dict(context or {}))
    report["seconds"] = round(time.time() - started, 1)
    write_report(out_dir, report, clips, clip_folds, oof)
    say(f"wrote {out_dir / REPORT_FILE} and {out_dir / OOF_FILE}")
    return report


def _gap(model: Mapping, base: Mapping, model_tables: Mapping, base_tables: Mapping, n_bootstrap: int, seed: int,
         alpha: float) -> dict:
    """Model minus baseline per level and metric, and a paired patient-bootstrap interval for the AUROC gap."""
    gap: dict[str, Any] = {}
    for level in LEVELS:
        row = {}
        for m in metrics.METRICS:
            a, b = model["levels"][level][m]["value"], base["levels"][level][m]["value"]
            row[m] = None if a is None or b is None else a - b
        t_model, t_base = model_tables[level], base_tables[level]
        row["auroc_paired"] = metrics.paired_bootstrap_difference(
            t_model["labels"], t_model["prob"], t_base["prob"], groups=t_model["patients"], n=n_bootstrap,
            seed=seed, alpha=alpha)
        gap[level] = row
    return gap


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-") or "model"


def check_experiment(experiment, *, baseline: bool = True):
    """The experiment (loaded from a path or dict if needed), after checking that its classifier plugin,
    the baseline's and its preset all load - so a typo fails now, not after hours of training."""
    from steth_hub.experiment import Experiment, load_experiment
    from steth_hub.preprocess import load_preset

    if not isinstance(experiment, Experiment):
        experiment = load_experiment(experiment)
    _classifier_class(experiment.classifier)  # unknown name, missing dependency: a PluginError now
    if baseline and experiment.classifier != BASELINE_CLASSIFIER:
        _classifier_class(BASELINE_CLASSIFIER)
    try:
        load_preset(experiment.preset)
    except ConfigError as exc:
        raise ConfigError(f"preset of experiment {experiment.name!r}: {exc.message}",
                          path=experiment.source or exc.path, fix=exc.fix) from exc
    return experiment


def cross_validate(corpus, experiment, *, folds: int | None = None, out_dir: str | os.PathLike,
                   baseline: bool = True, n_bootstrap: int = 2000, seed: int = 0,
                   progress: bool | Progress = True, quick: bool = False, alpha: float = 0.05) -> dict:
    """Patient-grouped cross-validation of an experiment on a corpus, with the MFCC baseline beside it.

    Args:
        corpus: a corpus folder (``steth corpus import``) or a loaded ``Corpus``.
        experiment: an :class:`~steth_hub.experiment.Experiment`, or a config path/dict.
        folds: ``None`` uses the corpus's stored patient folds; ``K`` makes K seeded
            stratified patient folds instead.
        out_dir: where ``evaluation.json``, ``oof_predictions.csv`` and the fold models' training
            outputs go.
        baseline: also score the MFCC + logistic-regression baseline on the same folds.
        n_bootstrap: patient resamples per interval.
        quick: a smoke run with one epoch (and at most one of pretraining); the report says so in capitals.

    Returns:
        The report dict written to ``out_dir/evaluation.json``.
    """
    from steth_hub.preprocess import load_preset, preprocess_corpus

    say = _progress(progress)
    experiment = check_experiment(experiment, baseline=baseline)
    if isinstance(corpus, (str, os.PathLike)):
        from steth_hub.corpus import load_corpus

        corpus = load_corpus(corpus)
    say(f"preprocessing {len(corpus)} recordings with preset {_preset_name(experiment.preset)!r}")
    preset = load_preset(experiment.preset)
    clips, skipped = preprocess_corpus(corpus, preset, progress=bool(progress))
    if skipped:
        say(f"skipped {len(skipped)} recording(s) in preprocessing (listed in the report)")
    experiment = dataclasses.replace(experiment, preset=preset.to_dict() if hasattr(preset, "to_dict")
                                     else experiment.preset)
    context = {
        "corpus": {"path": os.fspath(getattr(corpus, "path", "") or "") or None,
                   "info": dict(getattr(corpus, "info", None) or {})},
        "skipped": [_skip_dict(s) for s in skipped],
    }
    return cross_validate_clips(clips, experiment, folds=None if folds else corpus_folds(corpus), n_folds=folds,
                                out_dir=out_dir, baseline=baseline, n_bootstrap=n_bootstrap, seed=seed, alpha=alpha,
                                progress=progress, quick=quick, recording_info=recording_info(corpus),
                                context=context)


def _preset_name(preset: Any) -> str:
    if isinstance(preset, Mapping):
        return str(preset.get("name", "<inline>"))
    return str(preset)


def _skip_dict(skip: Any) -> dict:
    if isinstance(skip, Mapping):
        return dict(skip)
    if hasattr(skip, "to_dict"):
        return skip.to_dict()
    return {"reason": str(skip)}
