"""Metrics: hand-checkable cases and properties of thresholds, aggregation and the patient bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from steth_hub import metrics


# --------------------------------------------------------------------------- binary_metrics
def test_binary_metrics_hand_case():
    # decisions at 0.5: TN, TN, FN, TP -> accuracy 3/4, sensitivity 1/2, specificity 1
    # AUROC: positive/negative pairs ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4); (0.35<0.4) -> 3/4
    out = metrics.binary_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.5)
    assert out == pytest.approx({"accuracy": 0.75, "sensitivity": 0.5, "specificity": 1.0, "youden_j": 0.5,
                                 "auroc": 0.75, "n": 4, "n_pos": 2})


def test_threshold_is_inclusive_and_can_differ_per_item():
    y, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert metrics.binary_metrics(y, p, 0.35)["sensitivity"] == 1.0  # prob >= threshold is asthma
    # per-item thresholds (each fold its own): 0.35 >= 0.3 -> TP; 0.8 < 0.9 -> FN; 0.4 >= 0.4 -> FP
    out = metrics.binary_metrics(y, p, [0.5, 0.4, 0.3, 0.9])
    assert out["sensitivity"] == 0.5 and out["specificity"] == 0.5 and out["accuracy"] == 0.5
    with pytest.raises(ValueError, match="one threshold per item"):
        metrics.binary_metrics(y, p, [0.5, 0.5])


def test_missing_class_gives_none_not_a_number():
    out = metrics.binary_metrics([1, 1, 1], [0.2, 0.6, 0.9], 0.5)
    assert out["auroc"] is None and out["specificity"] is None and out["youden_j"] is None
    assert out["sensitivity"] == pytest.approx(2 / 3)
    empty = metrics.binary_metrics([], [], 0.5)
    assert empty["n"] == 0 and empty["auroc"] is None


def test_auroc_agrees_with_scikit_learn_on_random_data():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 2)  # ties included
    assert metrics.binary_metrics(y, p)["auroc"] == pytest.approx(roc_auc_score(y, p))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="labels must be 0"):
        metrics.binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.binary_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="differ in length"):
        metrics.binary_metrics([0, 1, 1], [0.1, 0.2])


# --------------------------------------------------------------------------- youden_threshold
def _best_j(y, p):
    """Brute force: the largest J over every 'prob >= t' rule."""
    candidates = np.concatenate([np.unique(p), [np.inf]])
    return max(metrics.binary_metrics(y, p, t)["youden_j"] for t in candidates)


def test_youden_hand_case_and_tie_break():
    # J = 0.5 at t=0.8 and at t=0.35 (tie): the lower one (higher sensitivity) wins,
    # placed halfway to the next lower score: (0.35 + 0.1) / 2
    assert metrics.youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.225)


def test_youden_perfect_separation_sits_in_the_gap():
    t = metrics.youden_threshold([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.9])
    assert t == pytest.approx(0.5)
    assert metrics.binary_metrics([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.9], t)["youden_j"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_youden_reaches_the_maximum_j(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1).round(2)
    t = metrics.youden_threshold(y, p)
    assert np.isfinite(t)
    assert metrics.binary_metrics(y, p, t)["youden_j"] == pytest.approx(_best_j(y, p))


def test_youden_is_finite_in_degenerate_cases(caplog):
    assert metrics.youden_threshold([1, 1, 1], [0.2, 0.5, 0.9]) == metrics.FALLBACK_THRESHOLD
    assert "one class" in caplog.text
    assert metrics.youden_threshold([], []) == metrics.FALLBACK_THRESHOLD
    inverted = metrics.youden_threshold([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])
    assert np.isfinite(inverted)
    assert metrics.binary_metrics([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], inverted)["youden_j"] == 0.0


def test_recording_threshold_uses_recording_means():
    # clip-level scores overlap, recording means (0.2, 0.3 | 0.6, 0.7) separate at 0.45
    rec = ["a", "a", "b", "b", "c", "c", "d", "d"]
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    p = [0.0, 0.4, 0.1, 0.5, 0.3, 0.9, 0.35, 1.0]
    rec_mean = metrics.aggregate(p, rec)[1]
    assert rec_mean == pytest.approx([0.2, 0.3, 0.6, 0.675])
    t = metrics.recording_threshold(y, p, rec)
    assert t == pytest.approx((0.3 + 0.6) / 2)
    assert metrics.binary_metrics(y, p, t)["youden_j"] < 1.0  # the clips themselves do not separate


# --------------------------------------------------------------------------- aggregation
def test_aggregate_means_in_first_seen_order():
    ids, means = metrics.aggregate([1.0, 2.0, 3.0, 5.0], ["r2", "r1", "r2", "r1"])
    assert list(ids) == ["r2", "r1"]
    assert means == pytest.approx([2.0, 3.5])


def test_clip_to_recording_to_patient_is_a_mean_of_recordings():
    # patient p: recording x has 3 clips (mean 0.2), recording y 1 clip (0.8) -> patient 0.5, not clip mean 0.35
    clips_rec = ["x", "x", "x", "y"]
    rec_ids, rec_prob = metrics.aggregate([0.1, 0.2, 0.3, 0.8], clips_rec)
    _, rec_patient = metrics.group_value(["p", "p", "p", "p"], clips_rec)
    pat_ids, pat_prob = metrics.aggregate(rec_prob, rec_patient)
    assert list(pat_ids) == ["p"] and pat_prob == pytest.approx([0.5])


def test_group_value_refuses_conflicts():
    ids, values = metrics.group_value([1, 1, 0], ["a", "a", "b"])
    assert list(ids) == ["a", "b"] and list(values) == [1, 0]
    with pytest.raises(ValueError, match="'a'"):
        metrics.group_value([1, 0], ["a", "a"])


# --------------------------------------------------------------------------- bootstrap
def _patients(n_patients=30, clips=4, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.permutation(np.arange(n_patients) % 2), clips)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], clips)
    prob = 1 / (1 + np.exp(-(signal * (2 * labels - 1) + rng.normal(0, 1, labels.size))))
    return labels, prob, groups


def test_perfect_separation_gives_auroc_one_with_interval_one():
    y = np.repeat([0, 1] * 10, 3)
    p = np.where(y == 1, 0.9, 0.1) + np.random.default_rng(0).uniform(-0.05, 0.05, y.size)
    groups = np.repeat(np.arange(20), 3)
    out = metrics.bootstrap_ci(y, p, 0.5, groups=groups, n=300, seed=1)
    assert out["auroc"] == pytest.approx({"value": 1.0, "low": 1.0, "high": 1.0, "n_resamples": 300})
    assert out["sensitivity"]["low"] == pytest.approx(1.0) and out["specificity"]["low"] == pytest.approx(1.0)
    assert out["n_groups"] == 20 and out["n"] == 60


def test_shuffled_labels_give_auroc_near_half():
    y, p, groups = _patients(n_patients=60, clips=3, seed=4, signal=3.0)
    assert metrics.bootstrap_ci(y, p, 0.5, groups=groups, n=50)["auroc"]["value"] > 0.9
    # shuffle labels between patients (a patient keeps one label)
    patient_label = dict(zip(groups, y))
    names = sorted(patient_label)
    shuffled = dict(zip(names, np.random.default_rng(9).permutation([patient_label[n] for n in names])))
    y_shuffled = np.array([shuffled[g] for g in groups])
    out = metrics.bootstrap_ci(y_shuffled, p, 0.5, groups=groups, n=400, seed=0)
    assert abs(out["auroc"]["value"] - 0.5) < 0.15
    assert out["auroc"]["low"] < 0.5 < out["auroc"]["high"]


def test_intervals_are_ordered_and_deterministic_for_a_seed():
    y, p, groups = _patients(seed=2)
    a = metrics.bootstrap_ci(y, p, 0.5, groups=groups, n=300, seed=7)
    b = metrics.bootstrap_ci(y, p, 0.5, groups=groups, n=300, seed=7)
    c = metrics.bootstrap_ci(y, p, 0.5, groups=groups, n=300, seed=8)
    assert a == b
    assert a["auroc"]["low"] != c["auroc"]["low"]
    for m in metrics.METRICS:
        assert a[m]["low"] <= a[m]["value"] <= a[m]["high"]
    assert a["n_bootstrap"] == 300 and a["seed"] == 7 and a["alpha"] == 0.05
    wide = metrics.bootstrap_ci(y, p, 0.5, groups=groups, n=300, seed=7, alpha=0.5)
    assert wide["auroc"]["high"] - wide["auroc"]["low"] < a["auroc"]["high"] - a["auroc"]["low"]


def test_resampling_keeps_a_patients_items_together():
    groups = np.array(["a", "a", "a", "b", "c", "c"])
    for weights in metrics.patient_resamples(groups, n=50, seed=0):
        assert weights[0] == weights[1] == weights[2] and weights[4] == weights[5]
        # three patients drawn, with replacement: draw counts add up to three
        assert weights[0] + weights[3] + weights[4] == 3


def test_patient_resampling_is_wider_than_treating_clips_as_independent():
    # 10 identical clips per patient carry the evidence of one patient, not ten
    y, p, groups = _patients(n_patients=24, clips=1, seed=5, signal=0.8)
    y10, p10, g10 = np.repeat(y, 10), np.repeat(p, 10), np.repeat(groups, 10)
    by_patient = metrics.bootstrap_ci(y10, p10, 0.5, groups=g10, n=400, seed=0)["auroc"]
    by_clip = metrics.bootstrap_ci(y10, p10, 0.5, groups=np.arange(y10.size), n=400, seed=0)["auroc"]
    assert by_patient["value"] == by_clip["value"]
    assert (by_patient["high"] - by_patient["low"]) > 2 * (by_clip["high"] - by_clip["low"])


def test_resamples_without_both_classes_are_skipped_and_counted():
    # one asthma patient in 12: about (11/12)^12 = 35 % of resamples lack it
    y = np.array([1] + [0] * 11)
    p = np.linspace(0.9, 0.1, 12)
    out = metrics.bootstrap_ci(y, p, 0.5, groups=[f"p{i}" for i in range(12)], n=400, seed=0)
    assert 200 < out["auroc"]["n_resamples"] < 330
    assert out["sensitivity"]["n_resamples"] == out["auroc"]["n_resamples"]
    assert out["specificity"]["n_resamples"] == 400
    none = metrics.bootstrap_ci([0, 0], [0.1, 0.2], 0.5, groups=["a", "b"], n=20)
    assert none["auroc"] == {"value": None, "low": None, "high": None, "n_resamples": 0}


def test_paired_difference():
    y, p, groups = _patients(seed=1, signal=1.5)
    same = metrics.paired_bootstrap_difference(y, p, p, groups=groups, n=100)
    assert same["value"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0
    noise = np.random.default_rng(0).random(y.size)
    better = metrics.paired_bootstrap_difference(y, p, noise, groups=groups, n=300)
    single_a = metrics.binary_metrics(y, p)["auroc"]
    single_b = metrics.binary_metrics(y, noise)["auroc"]
    assert better["value"] == pytest.approx(single_a - single_b)
    assert 0 < better["low"] <= better["value"] <= better["high"]


def test_a_resample_scores_like_the_repeated_items():
    """One resample's metrics equal binary_metrics on the items repeated by their patient's draw count."""
    y, p, groups = _patients(n_patients=15, clips=3, seed=6)
    thresholds = np.where(np.arange(y.size) % 2, 0.4, 0.6)  # per-item thresholds, as pooled folds have
    weights = next(metrics.patient_resamples(groups, n=1, seed=11)).astype(int)
    expected = metrics.binary_metrics(np.repeat(y, weights), np.repeat(p, weights), np.repeat(thresholds, weights))
    one = metrics.bootstrap_ci(y, p, thresholds, groups=groups, n=1, seed=11)
    for m in metrics.METRICS:
        assert one[m]["low"] == pytest.approx(expected[m]) and one[m]["high"] == pytest.approx(expected[m])
