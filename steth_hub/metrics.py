"""Where predictions are scored: binary metrics, Youden's threshold, aggregation and patient-bootstrap intervals.

Every metric comes from scikit-learn (``confusion_matrix``, ``roc_curve``/``auc``); this
module only decides *what* is scored and *how the uncertainty is estimated*:

* :func:`binary_metrics` - accuracy, sensitivity, specificity, Youden's J and AUROC at a
  threshold (one threshold, or one per item: each cross-validation fold has its own);
* :func:`youden_threshold` - the threshold with the largest Youden's J (sensitivity +
  specificity - 1) on the data it is given - which must be training/validation data,
  never the data that is then scored with it;
* :func:`aggregate` - clip probabilities -> recording probabilities -> patient
  probabilities (means);
* :func:`bootstrap_ci` - percentile intervals from resampling **patients** with
  replacement: every clip or recording of a drawn patient goes into the resample
  together, because clips of one patient are not independent evidence.

scikit-learn is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: the metrics :func:`binary_metrics` returns, in display order
METRICS: tuple[str, ...] = ("auroc", "sensitivity", "specificity", "youden_j", "accuracy")
#: what :func:`youden_threshold` returns when the data has one class only (no ROC curve exists)
FALLBACK_THRESHOLD = 0.5


def _as_arrays(y_true, prob, weights=None):
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and probabilities ({p.size}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (not asthma) or 1 (asthma); found " + ", ".join(map(str, np.unique(y))))
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN or infinite values")
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    return y, p, w


def _decisions(prob: np.ndarray, threshold) -> np.ndarray:
    thr = np.asarray(threshold, dtype=np.float64)
    if thr.ndim and thr.shape != prob.shape:
        raise ValueError(f"one threshold per item needed: got {thr.size} for {prob.size} items")
    return prob >= thr


def _from_confusion(tn: float, fp: float, fn: float, tp: float) -> dict:
    """Accuracy, sensitivity, specificity and Youden's J from a (possibly weighted) confusion matrix."""
    pos, neg = tp + fn, tn + fp
    sens = float(tp / pos) if pos > 0 else None
    spec = float(tn / neg) if neg > 0 else None
    return {
        "accuracy": float((tp + tn) / (pos + neg)) if pos + neg > 0 else None,
        "sensitivity": sens,
        "specificity": spec,
        "youden_j": sens + spec - 1.0 if sens is not None and spec is not None else None,
    }


def _confusion(y: np.ndarray, decided: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """scikit-learn's 2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` (float, weighted)."""
    import sklearn
    from sklearn.metrics import confusion_matrix

    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        return confusion_matrix(y, decided.astype(np.int64), labels=[0, 1], sample_weight=w).astype(np.float64)


def _auroc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float | None:
    """scikit-learn's ROC AUC (``roc_curve`` + ``auc``, weighted); None with one class."""
    import sklearn
    from sklearn.metrics import auc, roc_curve

    pos = float(np.sum(y if w is None else w * y))
    neg = float(np.sum((1 - y) if w is None else w * (1 - y)))
    if pos <= 0 or neg <= 0:
        return None
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        fpr, tpr, _ = roc_curve(y, p, sample_weight=w)
    return float(auc(fpr, tpr))


def binary_metrics(y_true, prob, threshold=FALLBACK_THRESHOLD) -> dict:
    """Accuracy, sensitivity, specificity, Youden's J and AUROC of P(asthma) against labels.

    Args:
        y_true: 1 asthma, 0 not asthma.
        prob: P(asthma) per item.
        threshold: a decision threshold (``prob >= threshold`` is asthma), or one per item
            (pooled cross-validation predictions are decided with their own fold's threshold).

    Returns:
        ``{"accuracy", "sensitivity", "specificity", "youden_j", "auroc", "n", "n_pos"}``;
        a metric that needs a class the data lacks (AUROC with one class, sensitivity with
        no asthma) is ``None``.
    """
    y, p, _ = _as_arrays(y_true, prob)
    if y.size:
        out = _from_confusion(*_confusion(y, _decisions(p, threshold)).ravel())
        out["auroc"] = _auroc(y, p)
    else:
        out = dict.fromkeys(METRICS)
    out["n"] = int(y.size)
    out["n_pos"] = int(y.sum())
    return out


def youden_threshold(y_true, prob) -> float:
    """The decision threshold with the largest Youden's J on this data (always finite).

    The candidates are scikit-learn's ROC thresholds (every distinct score). The chosen
    threshold is placed halfway between the winning score and the next lower one, so it
    decides this data exactly as the winning ROC point does but sits in the gap rather
    than on a training example. Ties (equal J) go to the lower threshold, i.e. the higher
    sensitivity: a screening tool should rather miss fewer asthma patients. With a
    single class there is no ROC curve; :data:`FALLBACK_THRESHOLD` is returned (and logged).
    """
    import sklearn
    from sklearn.metrics import roc_curve

    y, p, _ = _as_arrays(y_true, prob)
    if y.size == 0 or y.min() == y.max():
        log.warning("youden_threshold: %s; using %.2f", "no data" if y.size == 0 else "only one class",
                    FALLBACK_THRESHOLD)
        return FALLBACK_THRESHOLD
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    j = tpr - fpr
    best = np.flatnonzero(j >= j.max() - 1e-12)[-1]  # thresholds descend: last = lowest threshold
    if best == 0:  # the "nobody is positive" point (threshold +inf): just above the highest score
        return float(np.nextafter(thresholds[1], np.inf))
    if best + 1 < len(thresholds):
        return float((thresholds[best] + thresholds[best + 1]) / 2.0)
    return float(thresholds[best])  # the lowest score: everybody is positive


def aggregate(prob, groups) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``prob`` per group, e.g. clip -> recording, or recording -> patient.

    Returns ``(group_ids, mean_prob)`` with the groups in order of first appearance.
    """
    values = np.asarray(prob, dtype=np.float64).ravel()
    groups = np.asarray(groups, dtype=object).ravel()
    if values.shape != groups.shape:
        raise ValueError(f"values ({values.size}) and groups ({groups.size}) differ in length")
    ids, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    means = np.bincount(inverse, weights=values, minlength=len(ids)) / np.bincount(inverse, minlength=len(ids))
    return ids[order], means[order]


def group_value(values, groups) -> tuple[np.ndarray, np.ndarray]:
    """The one value each group carries (its label, patient, fold...), in the order of :func:`aggregate`.

    Raises ``ValueError`` naming a group whose items disagree (e.g. a recording with two labels).
    """
    values = np.asarray(values, dtype=object).ravel()
    groups = np.asarray(groups, dtype=object).ravel()
    seen: dict = {}
    for g, v in zip(groups, values):
        if g in seen:
            if seen[g] != v:
                raise ValueError(f"group {g!r} has more than one value ({seen[g]!r} and {v!r})")
        else:
            seen[g] = v
    return np.array(list(seen), dtype=object), np.array(list(seen.values()), dtype=object)


def recording_threshold(labels, prob, recording_ids) -> float:
    """:func:`youden_threshold` on recording-level probabilities (the mean of each recording's clips).

    This is how every threshold in steth-hub is chosen: on validation recordings, because
    a recording (not a clip) is what a clinician screens.
    """
    _, p = aggregate(prob, recording_ids)
    _, y = group_value(np.asarray(labels).astype(np.int64), recording_ids)
    return youden_threshold(y.astype(np.int64), p)


def _percentile_interval(values: Sequence[float], alpha: float) -> tuple[float | None, float | None]:
    if not len(values):
        return None, None
    low, high = np.percentile(np.asarray(values, dtype=np.float64), [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _group_draws(n_groups: int, n: int, seed: int):
    """``n`` bootstrap draws of ``n_groups`` groups with replacement: how often each group was drawn."""
    rng = np.random.default_rng(seed)
    for _ in range(int(n) if n_groups else 0):
        yield np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)


def patient_resamples(groups, n: int, seed: int):
    """Yield ``n`` bootstrap weights per item: how often its patient (group) was drawn.

    Patients are drawn with replacement, as many as there are; an item's weight is its
    patient's draw count, so all of a patient's items go into a resample together.
    """
    ids, inverse = np.unique(np.asarray(groups, dtype=object).ravel(), return_inverse=True)
    for counts in _group_draws(len(ids), n, seed):
        yield counts[inverse].astype(np.float64)


def bootstrap_ci(y_true, prob, threshold=FALLBACK_THRESHOLD, *, groups, n: int = 2000, seed: int = 0,
                 alpha: float = 0.05, metrics: Iterable[str] = METRICS) -> dict:
    """Point estimates with percentile bootstrap intervals, resampling **patients** (``groups``).

    Each resample draws as many patients as there are, with replacement; every item of a
    drawn patient enters the resample as often as the patient was drawn (as scikit-learn
    sample weights, which is the same as repeating the items; a resample's confusion
    matrix is the draw-weighted sum of the patients' own matrices). A resample that lacks
    a class a metric needs (AUROC or Youden's J with one class, sensitivity without
    asthma) is skipped for that metric only; ``n_resamples`` says how many were used.
    The result is deterministic for a ``seed``.

    Returns:
        ``{metric: {"value", "low", "high", "n_resamples"}, "n", "n_pos", "n_groups",
        "n_bootstrap", "alpha", "seed"}``; ``low``/``high`` are None when no resample was usable.
    """
    y, p, _ = _as_arrays(y_true, prob)
    groups = np.asarray(groups, dtype=object).ravel()
    if groups.shape != y.shape:
        raise ValueError(f"one group per item needed: got {groups.size} for {y.size} items")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    metrics = tuple(metrics)
    decided = _decisions(p, threshold)
    point = binary_metrics(y, p, threshold)
    ids, inverse = np.unique(groups, return_inverse=True)
    per_group = np.stack([_confusion(y[inverse == g], decided[inverse == g]) for g in range(len(ids))]) \
        if len(ids) else np.zeros((0, 2, 2))
    samples: dict[str, list[float]] = {m: [] for m in metrics}
    for counts in _group_draws(len(ids), n, seed):
        scores = _from_confusion(*np.tensordot(counts, per_group, axes=1).ravel())
        if "auroc" in metrics:
            weights = counts[inverse].astype(np.float64)
            keep = weights > 0
            scores["auroc"] = _auroc(y[keep], p[keep], weights[keep])
        for m in metrics:
            if scores[m] is not None:
                samples[m].append(scores[m])
    out: dict = {}
    for m in metrics:
        low, high = _percentile_interval(samples[m], alpha)
        out[m] = {"value": point[m], "low": low, "high": high, "n_resamples": len(samples[m])}
    out.update({"n": point["n"], "n_pos": point["n_pos"], "n_groups": int(len(ids)), "n_bootstrap": int(n),
                "alpha": float(alpha), "seed": int(seed)})
    return out


def paired_bootstrap_difference(y_true, prob_a, prob_b, *, groups, n: int = 2000, seed: int = 0,
                                alpha: float = 0.05) -> dict:
    """AUROC(a) - AUROC(b) on the same items, with a patient-bootstrap interval.

    Both models are scored on the same resampled patients each time, so the interval is
    that of the *gap* (narrower than comparing two separate intervals). Use it to say
    whether a model beats the baseline by more than chance.
    """
    y, pa, _ = _as_arrays(y_true, prob_a)
    _, pb, _ = _as_arrays(y_true, prob_b)
    if pa.shape != pb.shape:
        raise ValueError("the two models' probabilities differ in length")
    groups = np.asarray(groups, dtype=object).ravel()

    def diff(keep, w):
        a, b = _auroc(y[keep], pa[keep], w), _auroc(y[keep], pb[keep], w)
        return None if a is None or b is None else a - b

    if groups.shape != y.shape:
        raise ValueError(f"one group per item needed: got {groups.size} for {y.size} items")
    value = diff(np.ones_like(y, dtype=bool), None) if y.size else None
    samples = []
    for weights in patient_resamples(groups, n, seed):
        keep = weights > 0
        d = diff(keep, weights[keep])
        if d is not None:
            samples.append(d)
    low, high = _percentile_interval(samples, alpha)
    return {"value": value, "low": low, "high": high, "n_resamples": len(samples), "n_bootstrap": int(n),
            "alpha": float(alpha), "seed": int(seed)}
