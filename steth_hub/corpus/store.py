"""The corpus folder on disk: writing it atomically, and loading it back.

Layout (docs/architecture.md)::

    OUT/
      dataset/      datasets.Dataset.save_to_disk: one row per recording, columns COLUMNS
      qc.json       what was imported and what was not (steth_hub.corpus.qc)
      splits.json   patient folds (steth_hub.corpus.splits)
      corpus.json   {"source", "created", "steth_hub_version", "n_recordings", "n_patients", ...}

The ``audio`` column is a ``datasets.Audio`` feature holding the original file's bytes, so
the folder is an ordinary Hugging Face audio dataset. steth-hub reads it with decoding
disabled and decodes the bytes with :func:`steth_hub.audio.decode` (no torchcodec needed).

The whole folder is built in a temporary sibling and swapped in at the end
(:func:`steth_hub.fileio.atomic_directory`): an interrupted import leaves the previous
corpus (or nothing), never half of one. ``datasets`` is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from steth_hub.corpus.entries import COLUMNS, Entry
from steth_hub.errors import AudioError, CorpusError
from steth_hub.fileio import atomic_directory, atomic_write_json

if TYPE_CHECKING:  # pragma: no cover
    from steth_hub.audio import Recording

FORMAT_VERSION = 1
MARKER = "corpus.json"


def _features():
    import datasets

    text, number, integer = datasets.Value("string"), datasets.Value("float64"), datasets.Value("int64")
    return datasets.Features({
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
        "recording_id": text, "patient_id": text, "sex": text, "age": number, "site": text, "device": text,
        "diagnosis": text, "diagnosis_normalised": text, "label": integer, "source": text,
        "sample_rate": integer, "duration": number, "content_hash": text, "annotation": text, "fold": integer,
    })


@contextlib.contextmanager
def _quiet_datasets():
    """Silence datasets' own progress bars while saving (the import has its own)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def check_destination(out: str | Path, inputs: Sequence[str | Path] = (), *, overwrite: bool = False) -> Path:
    """Refuse an OUT that would destroy something: a non-empty folder that is not a corpus, a file,
    or a folder that is (or holds) one of the inputs (the rule of :func:`steth_hub.fileio.check_output_folder`)."""
    from steth_hub.fileio import check_output_folder

    return check_output_folder(out, inputs, markers=(MARKER,), overwrite=overwrite, what="corpus", error=CorpusError)


def write_corpus(out: str | Path, entries: Sequence[Entry], *, splits: dict, qc: dict, info: dict,
                 overwrite: bool = False) -> Path:
    """Write the corpus folder atomically; replaces an existing corpus at ``out`` only when complete."""
    import datasets

    out = check_destination(out, overwrite=overwrite)
    folds = splits["folds"]
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for entry in entries:
        columns["audio"].append({"bytes": entry.read_bytes(), "path": entry.file})
        for key, value in entry.row(folds[entry.patient_id]).items():
            columns[key].append(value)
    with atomic_directory(out) as tmp:
        dataset = datasets.Dataset.from_dict(columns, features=_features())
        dataset = dataset.cast_column("audio", datasets.Audio())
        with _quiet_datasets():
            dataset.save_to_disk(str(tmp / "dataset"))
        atomic_write_json(tmp / "qc.json", qc)
        atomic_write_json(tmp / "splits.json", splits)
        atomic_write_json(tmp / MARKER, info)
    return out


def corpus_info(source: str, entries: Sequence[Entry], *, src, extra: dict | None = None) -> dict:
    """The ``corpus.json`` record."""
    from steth_hub import __version__

    labels = [e.label for e in entries]
    info = {
        "format_version": FORMAT_VERSION, "source": source, "src": src,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "steth_hub_version": __version__, "n_recordings": len(entries),
        "n_patients": len({e.patient_id for e in entries}),
        "n_asthma_recordings": int(sum(labels)), "n_asthma_patients": len({e.patient_id for e in entries if e.label}),
    }
    if extra:
        info.update(extra)
    return info


@dataclass(frozen=True)
class Patient:
    """One patient of a corpus: label, fold, source and the row indices of the patient's recordings."""

    patient_id: str
    label: int
    fold: int
    source: str
    indices: tuple[int, ...]


class Corpus:
    """A corpus folder loaded back: ``dataset`` (audio decoding disabled), ``splits``, ``qc``, ``info``."""

    def __init__(self, path: Path, dataset, splits: dict, qc: dict, info: dict):
        self.path = Path(path)
        self.dataset = dataset
        self.splits = splits
        self.qc = qc
        self.info = info

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return (f"Corpus({str(self.path)!r}, source={self.info.get('source')!r}, recordings={len(self)}, "
                f"patients={self.info.get('n_patients')})")

    def column(self, name: str) -> list:
        """One metadata column as a list (not ``audio``: use :meth:`recordings`)."""
        return list(self.dataset[name])

    def rows(self) -> list[dict]:
        """Every row without its audio."""
        return self.dataset.remove_columns(["audio"]).to_list()

    def recordings(self, indices: Sequence[int] | None = None) -> Iterator[tuple[dict, "Recording"]]:
        """Yield ``(row without audio, Recording)`` for the given row indices (all by default)."""
        from steth_hub.audio import decode

        subset = self.dataset if indices is None else self.dataset.select(list(indices))
        for row in subset:
            audio = row.pop("audio")
            try:
                recording = decode(audio["bytes"])
            except AudioError as exc:
                raise AudioError(exc.message, path=f"{self.path}:{row['recording_id']}", code=exc.code,
                                 fix="import the corpus again; its stored audio is damaged") from exc
            recording.source = row["recording_id"]
            yield row, recording

    def patients(self) -> dict[str, Patient]:
        """{patient_id: :class:`Patient`} in order of first appearance."""
        indices: dict[str, list[int]] = {}
        meta: dict[str, tuple[int, int, str]] = {}
        table = self.dataset.select_columns(["patient_id", "label", "fold", "source"]).to_dict()
        for i, patient in enumerate(table["patient_id"]):
            indices.setdefault(patient, []).append(i)
            meta.setdefault(patient, (table["label"][i], table["fold"][i], table["source"][i]))
        return {p: Patient(p, meta[p][0], meta[p][1], meta[p][2], tuple(ix)) for p, ix in indices.items()}

    def summary(self) -> dict:
        """Counts by label, diagnosis, source, fold and patient (what ``steth corpus info`` prints)."""
        table = self.dataset.select_columns(["patient_id", "label", "diagnosis_normalised", "source",
                                             "fold"]).to_dict()

        def tally(key, names=None) -> dict:
            out: dict = {}
            for value, patient in zip(table[key], table["patient_id"]):
                name = names.get(value, value) if names else value
                slot = out.setdefault(str(name), {"recordings": 0, "patients": set()})
                slot["recordings"] += 1
                slot["patients"].add(patient)
            return {k: {"recordings": v["recordings"], "patients": len(v["patients"])}
                    for k, v in sorted(out.items())}

        patients = self.patients()
        per_patient = [len(p.indices) for p in patients.values()] or [0]
        return {
            "path": str(self.path), "source": self.info.get("source"), "recordings": len(self),
            "patients": len(patients),
            "by_label": tally("label", {0: "not_asthma", 1: "asthma"}),
            "by_diagnosis": tally("diagnosis_normalised"), "by_source": tally("source"),
            "by_fold": tally("fold"),
            "recordings_per_patient": {"min": min(per_patient), "median": statistics.median(per_patient),
                                       "max": max(per_patient)},
            "per_patient": {p.patient_id: {"recordings": len(p.indices), "label": p.label, "fold": p.fold}
                            for p in patients.values()},
            "qc": self.qc.get("counts", {}),
        }


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path.name} is missing", path=path.parent,
                          fix="import the corpus again (steth corpus import ...)") from None
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{path.name} is not valid JSON ({exc})", path=path,
                          fix="import the corpus again (steth corpus import ...)") from None


def load_corpus(path: str | Path) -> Corpus:
    """Load a corpus folder written by :func:`write_corpus`; :class:`CorpusError` when it is not one."""
    import datasets

    path = Path(path)
    if not path.is_dir():
        raise CorpusError("corpus folder not found", path=path,
                          fix="import one first: steth corpus import {kauh,icbhi,manifest} SRC OUT")
    if not (path / MARKER).is_file() or not (path / "dataset").is_dir():
        raise CorpusError("not a steth-hub corpus (no corpus.json or dataset/)", path=path,
                          fix="pass the folder written by steth corpus import")
    info = _read_json(path / MARKER)
    splits = _read_json(path / "splits.json")
    qc = _read_json(path / "qc.json")
    try:
        dataset = datasets.load_from_disk(str(path / "dataset"))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, pyarrow errors...
        raise CorpusError(f"dataset/ cannot be loaded ({exc})", path=path,
                          fix="import the corpus again (steth corpus import ...)") from exc
    if not isinstance(dataset, datasets.Dataset):
        raise CorpusError("dataset/ holds several splits; expected one Dataset", path=path,
                          fix="import the corpus again (steth corpus import ...)")
    missing = [name for name in COLUMNS if name not in dataset.column_names]
    if missing:
        raise CorpusError(f"dataset/ lacks column(s) {', '.join(missing)}", path=path,
                          fix="import the corpus again with this version of steth-hub")
    dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
    return Corpus(path, dataset, splits, qc, info)
