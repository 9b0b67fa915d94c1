"""The records an importer hands to hygiene: one :class:`Entry` per recording found, one
:class:`Skip` per file left out.

Importers (``kauh.py``, ``icbhi.py``, ``manifest.py``) only read names and tables; they
fill an :class:`Entry` with the metadata of one file. Hygiene (``qc.py``) decodes it and
adds the audio facts (sample rate, duration, content hash, warnings); the store
(``store.py``) turns the survivors into dataset rows. Keeping this record in one place keeps
the three stages agreeing on the columns of docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from steth_hub.corpus.diagnosis import asthma_label, normalise_diagnosis

#: file extensions an importer treats as recordings (what libsndfile decodes)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")

#: the columns of a corpus dataset, in order (docs/architecture.md)
COLUMNS = ("audio", "recording_id", "patient_id", "sex", "age", "site", "device", "diagnosis",
           "diagnosis_normalised", "label", "source", "sample_rate", "duration", "content_hash",
           "annotation", "fold")


@dataclass
class Entry:
    """One recording and its metadata, before and after decoding.

    ``file`` is how reports name it (relative to the imported folder); ``path`` is where its
    bytes are read from, or ``data`` holds them (recordings taken from a saved corpus).
    """

    file: str
    recording_id: str
    patient_id: str
    diagnosis: str
    source: str
    path: Path | None = None
    sex: str | None = None
    age: float | None = None
    site: str | None = None
    device: str | None = None
    annotation: str | None = None
    diagnosis_normalised: str = ""
    label: int = -1
    sample_rate: int | None = None
    duration: float | None = None
    content_hash: str | None = None
    warnings: list[str] = field(default_factory=list)
    data: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.diagnosis_normalised:
            self.diagnosis_normalised = normalise_diagnosis(self.diagnosis)
        if self.label not in (0, 1):
            self.label = asthma_label(self.diagnosis_normalised)

    def read_bytes(self) -> bytes:
        """The original file's bytes."""
        if self.data is not None:
            return self.data
        assert self.path is not None, "an Entry needs a path or data"
        return Path(self.path).read_bytes()

    def metadata(self) -> dict:
        """The patient facts that must agree across one patient's files."""
        return {"sex": self.sex, "age": self.age, "diagnosis_normalised": self.diagnosis_normalised,
                "label": self.label}

    def row(self, fold: int) -> dict:
        """The dataset row (every column but ``audio``)."""
        return {
            "recording_id": self.recording_id, "patient_id": self.patient_id, "sex": self.sex,
            "age": self.age, "site": self.site, "device": self.device, "diagnosis": self.diagnosis,
            "diagnosis_normalised": self.diagnosis_normalised, "label": int(self.label),
            "source": self.source, "sample_rate": self.sample_rate, "duration": self.duration,
            "content_hash": self.content_hash, "annotation": self.annotation, "fold": int(fold),
        }


@dataclass
class Skip:
    """A file left out of the corpus: which, why (``code``, ``reason``) and what to do (``fix``)."""

    file: str
    code: str
    reason: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (as reports name files), or the path itself when outside it."""
    path, root = Path(path), Path(root)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def audio_files(root: Path) -> list[Path]:
    """Every recording under ``root`` (recursively, by extension, case-insensitive), sorted.

    Hidden files and folders (names starting with ``.``, such as the temporary folder of an
    import being written) are not recordings.
    """
    root = Path(root)
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))
