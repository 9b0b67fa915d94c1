"""Patient-level folds: every recording of a patient lands in the same fold.

Folds come from scikit-learn's ``StratifiedGroupKFold`` (imported only when folds are
made): grouped by patient, so no patient is ever in two folds, and stratified by the
patient's label, so each fold holds asthma and non-asthma patients in about the corpus's
proportion. The same recordings, ``n_folds`` and ``seed`` give the same folds.

The result is stored with the corpus as ``splits.json``::

    {"seed": 0, "n_folds": 5, "method": "StratifiedGroupKFold", "folds": {patient_id: fold},
     "summary": [{"fold": 0, "patients": ..., "recordings": ..., "asthma_patients": ...}, ...]}

and as the ``fold`` column of the dataset.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from steth_hub.errors import CorpusError

METHOD = "StratifiedGroupKFold"
LABEL_NAMES = {0: "not-asthma", 1: "asthma"}


def patient_labels(patient_ids: Sequence[str], labels: Sequence[int]) -> dict[str, int]:
    """{patient: label}; :class:`CorpusError` when one patient carries two labels."""
    out: dict[str, int] = {}
    for patient, label in zip(patient_ids, labels):
        if out.setdefault(patient, int(label)) != int(label):
            raise CorpusError(f"patient {patient} has recordings with labels {out[patient]} and {label}",
                              fix="resolve the patient's label before splitting (hygiene normally does this)")
    return out


def patient_folds(patient_ids: Sequence[str], labels: Sequence[int], *, n_folds: int = 5,
                  seed: int = 0, recording_ids: Sequence[str] | None = None) -> dict[str, int]:
    """{patient_id: fold}: the one fold maker of steth-hub (corpus import, cross-validation, federated partitions).

    Without ``recording_ids`` each row is one recording (a corpus's rows), taken in patient-id
    order, so the folds do not depend on the order of the rows. With ``recording_ids`` the rows
    may be clips (a ClipSet: several per recording); they are reduced to one row per recording in
    the order the recordings first appear, the order in which ``steth evaluate --folds K --seed S``
    has always made its folds (the kept reports' ``folds_fingerprint`` depends on it).

    Raises :class:`CorpusError` when there are too few patients (of a class) for ``n_folds``,
    or when one patient (or recording) carries two labels.
    """
    if recording_ids is not None:
        first: dict = {}
        for i, rid in enumerate(recording_ids):
            rid = str(rid)
            if rid not in first:
                first[rid] = i
            elif int(labels[i]) != int(labels[first[rid]]) or str(patient_ids[i]) != str(patient_ids[first[rid]]):
                raise CorpusError(f"recording {rid} has clips with two labels or two patients",
                                  fix="re-import the corpus; every recording needs one patient and one label")
        rows = list(first.values())
        patient_ids = [str(patient_ids[i]) for i in rows]
        labels = [int(labels[i]) for i in rows]
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise CorpusError(f"n_folds must be an integer of at least 2, got {n_folds!r}", fix="use --folds 2 or more")
    per_patient = patient_labels(patient_ids, labels)
    if len(per_patient) < n_folds:
        raise CorpusError(f"{len(per_patient)} patient(s) cannot fill {n_folds} folds",
                          fix=f"use --folds {max(2, len(per_patient))} or fewer, or add patients")
    by_class = Counter(per_patient.values())
    smallest_label, smallest = min(by_class.items(), key=lambda kv: (kv[1], kv[0]))
    if smallest < n_folds:
        name = LABEL_NAMES.get(smallest_label, str(smallest_label))
        if smallest < 2:
            fix = f"add {name} patients: stratified folds need at least 2 patients of each class present"
        else:
            fix = f"use --folds {smallest} or fewer, or add {name} patients"
        raise CorpusError(f"only {smallest} {name} patient(s) for {n_folds} folds: every fold needs one", fix=fix)

    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    order = (list(range(len(patient_ids))) if recording_ids is not None
             else sorted(range(len(patient_ids)), key=lambda i: (patient_ids[i], i)))
    groups = np.array([patient_ids[i] for i in order], dtype=object)
    y = np.array([int(labels[i]) for i in order])
    folds: dict[str, int] = {}
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=int(seed))
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        for patient in groups[test]:
            folds[str(patient)] = fold
    empty = sorted(set(range(n_folds)) - set(folds.values()))
    if empty:
        raise CorpusError(f"fold(s) {empty} received no patient", fix=f"use fewer than {n_folds} folds")
    return dict(sorted(folds.items()))


def splits_record(folds: dict[str, int], patient_ids: Sequence[str], labels: Sequence[int], *,
                  n_folds: int, seed: int) -> dict:
    """The ``splits.json`` content, with a per-fold summary of patients and recordings."""
    per_patient = patient_labels(patient_ids, labels)
    recordings = Counter(folds[p] for p in patient_ids)
    summary = [{"fold": fold,
                "patients": sum(1 for f in folds.values() if f == fold),
                "asthma_patients": sum(1 for p, f in folds.items() if f == fold and per_patient[p] == 1),
                "recordings": recordings.get(fold, 0)} for fold in range(n_folds)]
    return {"seed": int(seed), "n_folds": int(n_folds), "method": METHOD, "group": "patient_id",
            "stratify": "label", "folds": dict(folds), "summary": summary}
