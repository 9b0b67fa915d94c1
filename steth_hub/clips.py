"""Clips: the fixed-length pieces a recording is cut into, and batches of them for training.

A :class:`Clip` is one piece of one recording. A :class:`ClipSet` holds many clips as
arrays, with the label and the patient of each, so training and evaluation can group by
patient (never by clip).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Clip:
    """One piece of a recording.

    Attributes:
        samples: 1-D float32 samples.
        sample_rate: samples per second.
        recording_id: the recording it was cut from.
        start: where it starts in the (untrimmed) recording, in seconds.
        index: its position among the recording's clips.
    """

    samples: np.ndarray
    sample_rate: int
    recording_id: str = "<recording>"
    start: float = 0.0
    index: int = 0

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


@dataclass
class ClipSet:
    """Many clips of equal length, as arrays, with their labels and owners.

    Attributes:
        waveforms: float32 ``[N, S]``.
        sample_rate: samples per second of every clip.
        labels: int ``[N]`` (1 asthma, 0 not asthma; -1 unknown).
        recording_ids, patient_ids: str ``[N]``.
        starts: float ``[N]``, seconds into the recording.
        meta: free-form facts (the preset used, the corpus path...).
    """

    waveforms: np.ndarray
    sample_rate: int
    labels: np.ndarray
    recording_ids: np.ndarray
    patient_ids: np.ndarray
    starts: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.waveforms = np.asarray(self.waveforms, dtype=np.float32)
        n = len(self.waveforms)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.recording_ids = np.asarray(self.recording_ids, dtype=object).reshape(n)
        self.patient_ids = np.asarray(self.patient_ids, dtype=object).reshape(n)
        self.starts = np.asarray(self.starts, dtype=np.float64).reshape(n)

    def __len__(self) -> int:
        return len(self.waveforms)

    def subset(self, index) -> "ClipSet":
        """The clips selected by a boolean mask or an index array."""
        index = np.asarray(index)
        return ClipSet(self.waveforms[index], self.sample_rate, self.labels[index], self.recording_ids[index],
                       self.patient_ids[index], self.starts[index], dict(self.meta))

    def for_patients(self, patients) -> "ClipSet":
        """The clips of the given patients."""
        return self.subset(np.isin(self.patient_ids, list(patients)))

    @classmethod
    def from_clips(cls, clips: list[Clip], labels, patient_ids, meta: dict | None = None) -> "ClipSet":
        """Stack clips (all of one length and rate) with one label and patient per clip."""
        if not clips:
            raise ValueError("no clips to stack")
        rates = {c.sample_rate for c in clips}
        lengths = {len(c.samples) for c in clips}
        if len(rates) != 1 or len(lengths) != 1:
            raise ValueError(f"clips differ in sample rate {sorted(rates)} or length {sorted(lengths)}")
        return cls(np.stack([c.samples for c in clips]), rates.pop(), labels,
                   [c.recording_id for c in clips], patient_ids, [c.start for c in clips], meta or {})

    @classmethod
    def concatenate(cls, sets: list["ClipSet"]) -> "ClipSet":
        sets = [s for s in sets if len(s)]
        if not sets:
            raise ValueError("no clips to concatenate")
        if len({s.sample_rate for s in sets}) != 1:
            raise ValueError("clip sets differ in sample rate")
        return cls(np.concatenate([s.waveforms for s in sets]), sets[0].sample_rate,
                   np.concatenate([s.labels for s in sets]), np.concatenate([s.recording_ids for s in sets]),
                   np.concatenate([s.patient_ids for s in sets]), np.concatenate([s.starts for s in sets]),
                   dict(sets[0].meta))
