"""Clips: the fixed-length pieces a recording is cut into, and batches of them for training.

A :class:`Clip` is one piece of one recording. A :class:`ClipSet` holds many clips as
arrays, with the label and the patient of each, so training and evaluation can group by
patient (never by clip). :func:`cut` is where a recording is cut into clips: the paper's
rule of whole, overlapping clips whose span is centred in the recording.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: file names of a saved ClipSet folder, and the layout version written into its index
CLIPSET_ARRAYS = "clips.safetensors"
CLIPSET_INDEX = "clips.json"
CLIPSET_FORMAT = 1


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

    def with_copies(self, extra: np.ndarray, **meta) -> "ClipSet":
        """These clips followed by altered copies of them (``extra``: ``k * N`` waveforms, copy by copy);
        a copy keeps its clip's label, recording, patient and start. ``meta`` is added to the set's meta."""
        extra = np.asarray(extra, dtype=np.float32)
        if len(self) == 0 or len(extra) % len(self):
            raise ValueError(f"{len(extra)} copies do not match {len(self)} clips")
        reps = 1 + len(extra) // len(self)
        return ClipSet(waveforms=np.concatenate([self.waveforms, extra]), sample_rate=self.sample_rate,
                       labels=np.tile(self.labels, reps), recording_ids=np.tile(self.recording_ids, reps),
                       patient_ids=np.tile(self.patient_ids, reps), starts=np.tile(self.starts, reps),
                       meta=dict(self.meta, **meta))

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

    # -- on disk: clips.safetensors (arrays) + clips.json (ids, rate, meta), written as one folder
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the set to ``directory`` (replaced as a whole, atomically); returns the folder."""
        from safetensors.numpy import save as save_arrays

        from steth_hub.fileio import atomic_directory, atomic_write_bytes, atomic_write_json

        arrays = {"waveforms": np.ascontiguousarray(self.waveforms), "labels": np.ascontiguousarray(self.labels),
                  "starts": np.ascontiguousarray(self.starts)}
        index = {"format": CLIPSET_FORMAT, "n_clips": len(self), "sample_rate": int(self.sample_rate),
                 "recording_ids": [str(r) for r in self.recording_ids],
                 "patient_ids": [str(p) for p in self.patient_ids], "meta": self.meta}
        with atomic_directory(directory) as tmp:
            atomic_write_bytes(tmp / CLIPSET_ARRAYS, save_arrays(arrays))
            atomic_write_json(tmp / CLIPSET_INDEX, index)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ClipSet":
        """Read a set written by :meth:`save`; a missing or damaged folder raises ``CorpusError``."""
        from safetensors.numpy import load_file

        from steth_hub.errors import CorpusError

        directory = Path(directory)
        try:
            index = json.loads((directory / CLIPSET_INDEX).read_text(encoding="utf-8"))
            arrays = load_file(str(directory / CLIPSET_ARRAYS))
            clipset = cls(arrays["waveforms"], int(index["sample_rate"]), arrays["labels"], index["recording_ids"],
                          index["patient_ids"], arrays["starts"], index.get("meta") or {})
        except Exception as exc:  # OSError, JSON/safetensors errors (SafetensorError is no OSError), KeyError
            raise CorpusError(f"cannot read saved clips: {type(exc).__name__}: {exc}", path=directory,
                              fix="delete the folder and run `steth preprocess` again") from exc
        if len(clipset) != int(index.get("n_clips", len(clipset))):
            raise CorpusError("saved clips are incomplete", path=directory,
                              fix="delete the folder and run `steth preprocess` again")
        return clipset


# --------------------------------------------------------------------------- cutting
def clip_starts(n_total: int, n_clip: int, overlap: float) -> list[int]:
    """Sample offsets of the whole clips that fit in ``n_total`` samples, centred.

    The paper's rule: clips of ``L`` samples with ``alpha`` % overlap advance by
    ``S = L (1 - alpha/100)`` (rounded to whole samples, at least 1); ``C = floor((N - L) / S) + 1``
    whole clips fit; their span ``(C - 1) S + L`` is centred in the ``N`` samples (the
    leftover is split evenly, the odd sample going to the end). Returns ``[]`` when not even
    one clip fits.
    """
    n_total, n_clip = int(n_total), int(n_clip)
    if n_clip <= 0:
        raise ValueError(f"clip length must be positive, got {n_clip} samples")
    if not 0.0 <= float(overlap) < 100.0:
        raise ValueError(f"overlap must be in [0, 100) percent, got {overlap}")
    if n_total < n_clip:
        return []
    step = max(1, int(round(n_clip * (1.0 - float(overlap) / 100.0))))
    count = (n_total - n_clip) // step + 1
    span = (count - 1) * step + n_clip
    offset = (n_total - span) // 2
    return [offset + k * step for k in range(count)]


def cut(clip: Clip, seconds: float, overlap: float = 50.0) -> list[Clip]:
    """Cut one clip (usually a whole trimmed recording) into centred clips of ``seconds``.

    Each new clip's ``start`` is in seconds of the original recording (the input's ``start``
    plus the offset), so a clip can always be found again in the file. A piece shorter than
    one clip raises :class:`~steth_hub.errors.RecordingRejected` with ``code="too-short"``.
    """
    from steth_hub.errors import RecordingRejected

    n_clip = int(round(float(seconds) * clip.sample_rate))
    starts = clip_starts(len(clip.samples), n_clip, overlap)
    if not starts:
        raise RecordingRejected(
            f"{clip.duration:.2f} s left after the earlier steps, shorter than one {float(seconds):g} s clip",
            path=clip.recording_id, code="too-short",
            fix="use longer recordings, or a preset with shorter clips or less trimming")
    return [Clip(samples=np.ascontiguousarray(clip.samples[s:s + n_clip], dtype=np.float32),
                 sample_rate=clip.sample_rate, recording_id=clip.recording_id,
                 start=clip.start + s / float(clip.sample_rate), index=k)
            for k, s in enumerate(starts)]


def clip_batch(waveforms, *, error=None) -> np.ndarray:
    """Clips as one float32 ``[N, S]`` array: one clip ``[S]`` becomes ``[1, S]``; any other shape is
    refused with ``error`` (default :class:`~steth_hub.errors.ModelError`) naming it and the fix."""
    from steth_hub.errors import ModelError

    x = np.asarray(waveforms, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise (error or ModelError)(f"expected clips as a [N, samples] array (or one clip [samples]), got shape "
                                    f"{tuple(x.shape)}", fix="stack equal-length clips into a 2-D array")
    return x
