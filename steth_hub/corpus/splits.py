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
from typing import Mapping, Sequence

from steth_hub.errors import ConfigError, CorpusError

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


def validation_split(patients: list[str], labels: Mapping[str, int], fraction: float, seed: int
                     ) -> tuple[list[str], list[str]]:
    """Split training patients into (train, validation), stratified by patient label where possible."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    patients = sorted(patients)
    if not 0 < fraction < 1:
        raise ConfigError(f"validation_fraction must be between 0 and 1, got {fraction}",
                          fix="set evaluation.validation_fraction to e.g. 0.2")
    y = [labels[p] for p in patients]
    n_valid = max(1, int(round(fraction * len(patients))))
    counts = np.bincount(y, minlength=2)
    stratify = y if counts.min() >= 2 and n_valid >= 2 and len(patients) - n_valid >= 2 else None
    train, valid = train_test_split(patients, test_size=n_valid, stratify=stratify, random_state=seed)
    return sorted(train), sorted(valid)


def patient_sources(clips, recording_info: Mapping[str, Mapping] | None = None) -> dict[str, str]:
    """patient id -> its source (``kauh``, ``icbhi``...): the corpus's ``source`` column where given,
    else the patient id's prefix (``kauh:EP38``)."""
    out: dict[str, str] = {}
    info = recording_info or {}
    for rid, pid in zip(clips.recording_ids.astype(str), clips.patient_ids.astype(str)):
        if pid not in out:
            out[pid] = str((info.get(rid) or {}).get("source") or pid.split(":", 1)[0])
    return out


def training_sources(evaluation: Mapping, sources: Mapping[str, str], *, where: str = "the experiment") -> set | None:
    """``evaluation.train_sources``, checked against the sources present; None when not set.

    Models are then trained (and their thresholds chosen) on those sources' patients only and
    scored on every held-out patient: a source without asthma patients then cannot teach a
    model to recognise the source instead of the disease.
    """
    wanted = evaluation.get("train_sources")
    if wanted in (None, [], ()):
        return None
    if isinstance(wanted, str):
        wanted = [wanted]
    if not isinstance(wanted, (list, tuple)) or not all(isinstance(w, str) for w in wanted):
        raise ConfigError(f"evaluation.train_sources must be a list of source names, got {wanted!r}", path=where,
                          fix="for example: train_sources: [kauh]")
    present = sorted(set(sources.values()))
    unknown = sorted(set(wanted) - set(present))
    if unknown:
        raise ConfigError(f"evaluation.train_sources names {unknown}, not in this corpus", path=where,
                          fix=f"use some of: {', '.join(present)}")
    return set(wanted)


def recording_info(corpus) -> dict[str, dict]:
    """``{recording_id: {source, diagnosis_normalised}}`` from a loaded corpus (empty without rows)."""
    dataset = getattr(corpus, "dataset", None)
    if dataset is None or not hasattr(dataset, "column_names"):
        return {}
    wanted = [c for c in ("recording_id", "source", "diagnosis_normalised") if c in dataset.column_names]
    if "recording_id" not in wanted:
        return {}
    table = dataset.select_columns(wanted).to_dict()
    return {rid: {c: table[c][i] for c in wanted if c != "recording_id"}
            for i, rid in enumerate(table["recording_id"])}
