"""Importer for the ICBHI 2017 Respiratory Sound Database: file names plus ``patient_diagnosis.csv``.

A recording is named::

    {patient}_{recording index}_{chest location}_{acquisition mode}_{device}.wav

for example ``112_1b1_Ar_sc_Meditron.wav`` (the excerpts shipped here add ``_middle10sec``;
a copy may carry `` (2)``, giving recording id ``icbhi:..-2``). The diagnosis of each patient
comes from ``patient_diagnosis.csv`` (no header: patient id, diagnosis; comma or tab
separated), which must sit in the imported folder. When the database's
``demographic_info.txt`` (patient, age, sex, adult BMI, child weight, child height; ``NA``
for unknown) is there too, age and sex are filled from it.

``patient_id`` is ``icbhi:<patient>``, ``site`` the chest location code (``Ar``, ``Tc``...),
``device`` the recording device (``Meditron``, ``LittC2SE``...).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from steth_hub.corpus.diagnosis import diagnosis_parts
from steth_hub.corpus.entries import Entry, Skip, audio_files, relative_name
from steth_hub.errors import CorpusError

SOURCE = "icbhi"
DIAGNOSIS_FILE = "patient_diagnosis.csv"
DEMOGRAPHICS_FILE = "demographic_info.txt"

PATTERN = ("{patient}_{recording index}_{chest location}_{acquisition mode}_{device}.wav "
           "(e.g. 112_1b1_Ar_sc_Meditron.wav)")

_NAME = re.compile(
    r"^(?P<patient>\d+)_(?P<index>[0-9A-Za-z]+)_(?P<site>[A-Za-z]+)_(?P<mode>sc|mc)_(?P<device>[A-Za-z0-9]+)"
    r"(?:\s*\(\s*(?P<take>\d+)\s*\))?(?:_middle10sec)?(?:\s*\(\s*(?P<take2>\d+)\s*\))?\s*$",
    re.IGNORECASE)


def parse_icbhi_name(name: str) -> dict:
    """The metadata in an ICBHI file name; ``ValueError`` when it does not parse."""
    stem = Path(name).stem
    match = _NAME.match(stem.strip())
    if not match:
        raise ValueError("expected patient_index_location_mode_device")
    patient = int(match["patient"])
    take = int(match["take"] or match["take2"] or 1)
    base = f"{patient}_{match['index']}_{match['site']}_{match['mode']}_{match['device']}"
    return {"patient": patient, "patient_id": f"{SOURCE}:{patient}", "site": match["site"],
            "mode": match["mode"].lower(), "device": match["device"], "take": take,
            "recording_id": f"{SOURCE}:{base}" + (f"-{take}" if take > 1 else "")}


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    delimiter = "\t" if lines and "\t" in lines[0] else ","
    return [[cell.strip() for cell in row] for row in csv.reader(lines, delimiter=delimiter)
            if any(cell.strip() for cell in row)]


def read_diagnoses(path: str | Path) -> dict[int, str]:
    """``patient_diagnosis.csv`` as {patient number: diagnosis}; :class:`CorpusError` when unusable."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{DIAGNOSIS_FILE} not found", path=path,
                          fix=f"put ICBHI's {DIAGNOSIS_FILE} (patient id, diagnosis; no header) in the folder")
    diagnoses: dict[int, str] = {}
    for number, row in enumerate(_rows(path), start=1):
        if len(row) < 2 or not diagnosis_parts(row[1]):
            raise CorpusError(f"line {number} has no diagnosis: {row}", path=path,
                              fix="each line must be: patient id, diagnosis")
        try:
            diagnoses[int(row[0])] = row[1]
        except ValueError:
            if number == 1:  # a header line
                continue
            raise CorpusError(f"line {number}: patient id {row[0]!r} is not a number", path=path,
                              fix="each line must be: patient id, diagnosis") from None
    if not diagnoses:
        raise CorpusError("no diagnoses in the file", path=path, fix="each line must be: patient id, diagnosis")
    return diagnoses


def read_demographics(path: str | Path) -> dict[int, tuple[float | None, str | None]]:
    """ICBHI's ``demographic_info.txt`` as {patient: (age, sex)}; empty when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[int, tuple[float | None, str | None]] = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        cells = line.split()
        if len(cells) < 3 or not cells[0].isdigit():
            continue
        try:
            age = float(cells[1])
        except ValueError:
            age = None
        sex = cells[2].upper() if cells[2].upper() in ("M", "F") else None
        out[int(cells[0])] = (age, sex)
    return out


def scan_icbhi(src: str | Path) -> tuple[list[Entry], list[Skip]]:
    """Entries for every ICBHI recording under ``src``; a :class:`Skip` for bad names and unknown patients."""
    src = Path(src)
    diagnoses = read_diagnoses(src / DIAGNOSIS_FILE)
    demographics = read_demographics(src / DEMOGRAPHICS_FILE)
    entries: list[Entry] = []
    skipped: list[Skip] = []
    for path in audio_files(src):
        name = relative_name(path, src)
        try:
            meta = parse_icbhi_name(path.name)
        except ValueError as exc:
            skipped.append(Skip(name, "bad-name", f"file name does not follow the ICBHI convention: {exc}",
                                f"rename it to {PATTERN}, or import the folder with a manifest"))
            continue
        diagnosis = diagnoses.get(meta["patient"])
        if diagnosis is None:
            skipped.append(Skip(name, "no-diagnosis", f"patient {meta['patient']} is not in {DIAGNOSIS_FILE}",
                                f"add a line '{meta['patient']},<diagnosis>' to {DIAGNOSIS_FILE}"))
            continue
        age, sex = demographics.get(meta["patient"], (None, None))
        entries.append(Entry(file=name, path=path, source=SOURCE, recording_id=meta["recording_id"],
                             patient_id=meta["patient_id"], diagnosis=diagnosis, sex=sex, age=age,
                             site=meta["site"], device=meta["device"]))
    return entries, skipped
