"""A corpus's clips together with the patient facts a generator is conditioned on.

:func:`corpus_clips` preprocesses a corpus with a preset (``excerpt-10s`` by default: the clips
every classifier here trains on) and returns, per clip, :class:`~steth_hub.generation.prompts.Conditions`
built from the corpus columns ``diagnosis_normalised``, ``sex`` and ``age`` (never the clinician's
sound-type ``annotation``). :func:`synthetic_clipset` wraps generated clips as a ``ClipSet`` whose
patient ids are ``synthetic:...``: a synthetic clip never carries a real patient's id.
"""

from __future__ import annotations

import os

import numpy as np

from steth_hub.generation.prompts import Conditions, check_age, diagnosis_group, normalise_sex

SYNTHETIC_PREFIX = "synthetic:"


def recording_facts(corpus) -> dict[str, dict]:
    """recording id -> {patient_id, diagnosis_normalised, sex, age, source} from a loaded corpus."""
    cols = [c for c in ("recording_id", "patient_id", "diagnosis_normalised", "sex", "age", "source")
            if c in corpus.dataset.column_names]
    table = corpus.dataset.select_columns(cols).to_dict()
    return {rid: {c: table[c][i] for c in cols if c != "recording_id"} for i, rid in enumerate(table["recording_id"])}


def conditions_of(facts: dict) -> Conditions:
    sex = facts.get("sex")
    try:
        sex = normalise_sex(sex) if sex else None
    except Exception:
        sex = None
    age = facts.get("age")
    try:
        age = check_age(age) if age is not None else None
    except Exception:
        age = None
    return Conditions(diagnosis_group(facts.get("diagnosis_normalised")), sex, age)


def corpus_clips(corpus, preset: str = "excerpt-10s", *, progress: bool = False):
    """``(clips, conditions, facts)``: the preprocessed :class:`~steth_hub.clips.ClipSet`, one
    :class:`Conditions` per clip, and the per-recording facts."""
    from steth_hub.preprocess import preprocess_corpus

    if isinstance(corpus, (str, os.PathLike)):
        from steth_hub.corpus import load_corpus

        corpus = load_corpus(corpus)
    clips, _ = preprocess_corpus(corpus, preset, progress=progress)
    facts = recording_facts(corpus)
    conds = [conditions_of(facts.get(str(r), {})) for r in clips.recording_ids]
    return clips, conds, facts


def synthetic_clipset(waveforms, sample_rate: int, label: int, *, tag: str = "gen", meta: dict | None = None):
    """Synthetic clips as a ClipSet: one pseudo-patient per clip, ``synthetic:<tag>:<i>`` (never a real id)."""
    from steth_hub.clips import ClipSet

    n = len(waveforms)
    ids = [f"{SYNTHETIC_PREFIX}{tag}:{i}" for i in range(n)]
    return ClipSet(np.asarray(waveforms, dtype=np.float32), int(sample_rate), [int(label)] * n, ids, ids,
                   np.zeros(n), dict(meta or {}, synthetic=True))


def is_synthetic(patient_ids) -> np.ndarray:
    return np.array([str(p).startswith(SYNTHETIC_PREFIX) for p in patient_ids], dtype=bool)
