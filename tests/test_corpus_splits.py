"""Patient-level folds: grouped by patient, stratified by label, deterministic for a seed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from steth_hub.corpus.splits import patient_folds, splits_record
from steth_hub.errors import CorpusError


def _cohort(n_asthma: int = 12, n_other: int = 20, seed: int = 1) -> tuple[list[str], list[int]]:
    """Recording-level patient ids and labels: 1 to 3 recordings per patient, like KAUH's filters."""
    rng = random.Random(seed)
    patients, labels = [], []
    for i in range(n_asthma + n_other):
        label = int(i < n_asthma)
        for _ in range(rng.randint(1, 3)):
            patients.append(f"kauh:{i}")
            labels.append(label)
    return patients, labels


def test_every_patient_in_exactly_one_fold_and_classes_spread():
    patients, labels = _cohort()
    folds = patient_folds(patients, labels, n_folds=4, seed=0)
    assert set(folds) == set(patients)          # a dict: one fold per patient by construction
    assert set(folds.values()) == {0, 1, 2, 3}
    asthma_patients = Counter(folds[p] for p in {p for p, y in zip(patients, labels) if y == 1})
    assert sorted(asthma_patients.values()) == [3, 3, 3, 3]  # 12 asthma patients spread evenly
    other_patients = Counter(folds[p] for p in {p for p, y in zip(patients, labels) if y == 0})
    assert sorted(other_patients.values()) == [5, 5, 5, 5]


def test_folds_are_deterministic_for_a_seed_and_independent_of_row_order():
    patients, labels = _cohort()
    first = patient_folds(patients, labels, n_folds=5, seed=7)
    assert patient_folds(patients, labels, n_folds=5, seed=7) == first
    order = list(range(len(patients)))
    random.Random(3).shuffle(order)
    shuffled = patient_folds([patients[i] for i in order], [labels[i] for i in order], n_folds=5, seed=7)
    assert shuffled == first
    assert any(patient_folds(patients, labels, n_folds=5, seed=s) != first for s in (8, 9, 10))


def test_too_few_patients_of_a_class_suggests_fewer_folds():
    patients, labels = _cohort(n_asthma=3, n_other=10)
    with pytest.raises(CorpusError) as err:
        patient_folds(patients, labels, n_folds=5)
    assert "only 3 asthma patient(s) for 5 folds" in str(err.value) and "--folds 3" in str(err.value)
    assert len(set(patient_folds(patients, labels, n_folds=3).values())) == 3


def test_single_class_corpora_split_and_bad_arguments_fail():
    patients = [f"icbhi:{i}" for i in range(6)]
    assert sorted(Counter(patient_folds(patients, [0] * 6, n_folds=3).values()).values()) == [2, 2, 2]
    with pytest.raises(CorpusError, match="at least 2"):
        patient_folds(patients, [0] * 6, n_folds=1)
    with pytest.raises(CorpusError, match="cannot fill"):
        patient_folds(patients, [0] * 6, n_folds=7)
    with pytest.raises(CorpusError, match="labels 0 and 1"):
        patient_folds(["a", "a", "b", "c"], [0, 1, 0, 0], n_folds=2)
    with pytest.raises(CorpusError, match="at least 2 patients of each class"):
        patient_folds(["a", "b", "c"], [1, 0, 0], n_folds=2)


def test_splits_record_summarises_each_fold():
    patients, labels = _cohort()
    folds = patient_folds(patients, labels, n_folds=4, seed=0)
    record = splits_record(folds, patients, labels, n_folds=4, seed=0)
    assert (record["seed"], record["n_folds"], record["method"]) == (0, 4, "StratifiedGroupKFold")
    assert sum(row["recordings"] for row in record["summary"]) == len(patients)
    assert sum(row["patients"] for row in record["summary"]) == len(set(patients))
    assert sum(row["asthma_patients"] for row in record["summary"]) == 12
