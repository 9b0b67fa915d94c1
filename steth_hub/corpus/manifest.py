"""Importer for any folder of recordings described by a CSV manifest.

The manifest is a CSV file with a header row. Column names are case-insensitive:

=================  ========  ==============================================================
column             required  meaning
=================  ========  ==============================================================
``path``           yes       the audio file, relative to SRC (else to the manifest's folder),
                             or absolute
``patient_id``     yes       the patient; stored as ``manifest:<patient_id>``
``diagnosis``      yes       as written by the clinic (``asthma``, ``COPD``, ``Asthma + COPD``)
``label``          no        ``1``/``0`` (also ``asthma``/``not_asthma``, ``yes``/``no``); when
                             empty it is derived from the diagnosis; when it contradicts the
                             diagnosis the row is skipped as ``mislabelled``
``sex``            no        ``F``/``M`` (also ``female``/``male``)
``age``            no        years (a number)
``site``           no        recording site
``device``         no        device or stethoscope filter
``recording_id``   no        defaults to the path without its extension
``annotation``     no        a clinician's finding; kept for reference, never a model input
=================  ========  ==============================================================

Other columns are ignored. A missing required column stops the import; a bad row (missing
file, empty patient or diagnosis, unreadable label, sex or age, mislabelled) is skipped and
reported, and the other rows are imported.
"""

from __future__ import annotations

import csv
from pathlib import Path

from steth_hub.corpus.diagnosis import asthma_label, normalise_diagnosis
from steth_hub.corpus.entries import Entry, Skip, relative_name
from steth_hub.errors import CorpusError

SOURCE = "manifest"
DEFAULT_NAME = "manifest.csv"
REQUIRED = ("path", "patient_id", "diagnosis")
OPTIONAL = ("label", "sex", "age", "site", "device", "recording_id", "annotation")

_LABELS = {"1": 1, "asthma": 1, "yes": 1, "true": 1, "0": 0, "not_asthma": 0, "not asthma": 0, "no": 0,
           "false": 0}
_SEXES = {"m": "M", "male": "M", "f": "F", "female": "F"}


class RowError(ValueError):
    """A manifest row that cannot be imported: ``code`` and a ``fix``."""

    def __init__(self, code: str, reason: str, fix: str):
        super().__init__(reason)
        self.code, self.reason, self.fix = code, reason, fix


def locate_manifest(src: str | Path, manifest: str | Path | None) -> tuple[Path, Path]:
    """(folder the paths are relative to, manifest file); SRC may itself be the CSV."""
    src = Path(src)
    if manifest is None:
        manifest = src if src.is_file() else src / DEFAULT_NAME
        src = src.parent if src.is_file() else src
    manifest = Path(manifest)
    if not manifest.is_file():
        raise CorpusError("manifest not found", path=manifest,
                          fix=f"pass --manifest CSV, or put {DEFAULT_NAME} in the folder (columns: "
                              f"{', '.join(REQUIRED + OPTIONAL)}; see docs/corpus.md)")
    return src, manifest


def _resolve(value: str, src: Path, manifest: Path) -> Path:
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    for base in (src, manifest.parent):
        if (base / path).exists():
            return base / path
    return src / path


def _label(text: str, diagnosis_normalised: str, diagnosis: str) -> int:
    derived = asthma_label(diagnosis_normalised)
    if not text:
        return derived
    given = _LABELS.get(text.strip().lower())
    if given is None:
        raise RowError("bad-row", f"label {text!r} is not 1/0 (or asthma/not_asthma)",
                       "write 1 for asthma, 0 for not asthma, or leave it empty to derive it from the diagnosis")
    if given != derived:
        said = "asthma" if given else "not asthma"
        raise RowError("mislabelled",
                       f"label {text!r} ({said}) contradicts the diagnosis {diagnosis!r} "
                       f"(normalised {diagnosis_normalised!r}, which is {'' if derived else 'not '}asthma)",
                       "correct the label or the diagnosis: the label is 1 exactly when the diagnosis "
                       "includes asthma")
    return given


def _row_entry(row: dict, src: Path, manifest: Path) -> Entry:
    value = {key: (row.get(key) or "").strip() for key in REQUIRED + OPTIONAL}
    if not value["path"]:
        raise RowError("bad-row", "the path is empty", "fill in the path column")
    path = _resolve(value["path"], src, manifest)
    if not path.is_file():
        raise RowError("missing", f"file not found ({path})",
                       "correct the path (relative to SRC or to the manifest's folder) or remove the row")
    for key in ("patient_id", "diagnosis"):
        if not value[key]:
            raise RowError("bad-row", f"the {key} is empty", f"fill in the {key} column")
    try:
        normalised = normalise_diagnosis(value["diagnosis"])
    except ValueError as exc:
        raise RowError("bad-row", str(exc), "fill in the diagnosis column") from None
    label = _label(value["label"], normalised, value["diagnosis"])
    sex = None
    if value["sex"]:
        sex = _SEXES.get(value["sex"].lower())
        if sex is None:
            raise RowError("bad-row", f"sex {value['sex']!r} is not F or M", "write F, M or leave it empty")
    age = None
    if value["age"]:
        try:
            age = float(value["age"])
        except ValueError:
            raise RowError("bad-row", f"age {value['age']!r} is not a number",
                           "write the age in years or leave it empty") from None
    rel = Path(value["path"])
    recording = value["recording_id"] or rel.with_suffix("").as_posix()
    return Entry(file=relative_name(path, src), path=path, source=SOURCE,
                 recording_id=f"{SOURCE}:{recording}", patient_id=f"{SOURCE}:{value['patient_id']}",
                 diagnosis=value["diagnosis"], diagnosis_normalised=normalised, label=label, sex=sex, age=age,
                 site=value["site"] or None, device=value["device"] or None,
                 annotation=value["annotation"] or None)


def scan_manifest(src: str | Path, manifest: str | Path | None = None) -> tuple[list[Entry], list[Skip]]:
    """Entries for the manifest's rows; a :class:`Skip` for each bad row; :class:`CorpusError` for a bad file."""
    src, manifest = locate_manifest(src, manifest)
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise CorpusError("the manifest is empty", path=manifest,
                              fix=f"write a header row with at least: {', '.join(REQUIRED)}")
        reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames]
        missing = [name for name in REQUIRED if name not in reader.fieldnames]
        if missing:
            raise CorpusError(f"missing column(s) {', '.join(missing)} (found: {', '.join(reader.fieldnames)})",
                              path=manifest,
                              fix=f"add the column(s); required: {', '.join(REQUIRED)}; "
                                  f"optional: {', '.join(OPTIONAL)} (see docs/corpus.md)")
        entries: list[Entry] = []
        skipped: list[Skip] = []
        for line, row in enumerate(reader, start=2):
            if not any((cell or "").strip() for cell in row.values() if isinstance(cell, str)):
                continue
            try:
                entries.append(_row_entry(row, src, manifest))
            except RowError as exc:
                where = (row.get("path") or "").strip() or f"{manifest.name} line {line}"
                skipped.append(Skip(where, exc.code, f"{manifest.name} line {line}: {exc.reason}", exc.fix))
    return entries, skipped
