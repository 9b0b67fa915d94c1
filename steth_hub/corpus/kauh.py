"""Importer for the KAUH lung-sound corpus, whose labels live in the file names.

A KAUH file is named::

    {filter}P{subject}_{diagnosis},{sound type},{chest location},{age},{sex}_middle10sec.wav

for example ``EP38_Asthma,E W,P R M,38,M_middle10sec.wav``. The filter is the stethoscope
mode: B (bell), D (diaphragm), E (extended); the three files of a subject are one
auscultation heard through three filters, so they share ``patient_id`` ``kauh:<subject>``.
The parser also accepts names without ``_middle10sec``, stray spaces around fields, any
letter case, and a sex field such as ``M (2)`` that marks a second take of the same site
(recording id ``kauh:BP22-2``).

The sound type (``E W`` = expiratory wheeze...) is the clinician's finding at auscultation.
It goes to the ``annotation`` column only: it is never a model input, because it gives the
diagnosis away.
"""

from __future__ import annotations

import re
from pathlib import Path

from steth_hub.corpus.diagnosis import normalise_diagnosis
from steth_hub.corpus.entries import Entry, Skip, audio_files, relative_name

SOURCE = "kauh"

#: stethoscope filter letter -> ``device`` column
FILTERS = {"B": "kauh-bell", "D": "kauh-diaphragm", "E": "kauh-extended"}

PATTERN = ("{filter}P{subject}_{diagnosis},{sound type},{chest location},{age},{sex}_middle10sec.wav "
           "(filter B, D or E; e.g. EP38_Asthma,E W,P R M,38,M_middle10sec.wav)")

_NAME = re.compile(r"^\s*(?P<filter>[A-Za-z])P(?P<subject>\d+)\s*_(?P<fields>.*?)(?:\s*_middle10sec)?\s*$",
                   re.IGNORECASE)
_SEX = re.compile(r"^(?P<sex>[MF])\s*(?:\(\s*(?P<take>\d+)\s*\))?$", re.IGNORECASE)


def _clean(text: str) -> str:
    return " ".join(text.split())


def parse_kauh_name(name: str) -> dict:
    """The metadata in a KAUH file name; ``ValueError`` saying what is wrong when it does not parse."""
    stem = Path(name).stem if Path(name).suffix.lower() in (".wav", ".flac", ".ogg", ".mp3") else name
    match = _NAME.match(stem)
    if not match:
        raise ValueError("the name does not start with {filter}P{subject}_")
    letter = match["filter"].upper()
    if letter not in FILTERS:
        raise ValueError(f"unknown stethoscope filter {match['filter']!r} (expected B, D or E)")
    fields = [_clean(f) for f in match["fields"].split(",")]
    if len(fields) != 5:
        raise ValueError(f"expected 5 comma-separated fields after the subject, found {len(fields)}")
    diagnosis, sound, location, age_text, sex_text = fields
    normalise_diagnosis(diagnosis)  # ValueError when empty
    try:
        age = float(age_text)
    except ValueError:
        raise ValueError(f"age {age_text!r} is not a number") from None
    if not 0 <= age <= 130:
        raise ValueError(f"age {age_text!r} is outside 0-130 years")
    sex = _SEX.match(sex_text)
    if not sex:
        raise ValueError(f"sex {sex_text!r} is not M or F (optionally followed by a take such as '(2)')")
    subject = int(match["subject"])
    take = int(sex["take"] or 1)
    return {
        "filter": letter, "subject": subject, "take": take,
        "recording_id": f"{SOURCE}:{letter}P{subject}" + (f"-{take}" if take > 1 else ""),
        "patient_id": f"{SOURCE}:{subject}", "diagnosis": diagnosis, "annotation": sound or None,
        "site": location or None, "age": age, "sex": sex["sex"].upper(), "device": FILTERS[letter],
    }


def scan_kauh(src: str | Path) -> tuple[list[Entry], list[Skip]]:
    """Entries for every recording under ``src`` whose name parses; a :class:`Skip` for each that does not."""
    src = Path(src)
    entries: list[Entry] = []
    skipped: list[Skip] = []
    for path in audio_files(src):
        name = relative_name(path, src)
        try:
            meta = parse_kauh_name(path.name)
        except ValueError as exc:
            skipped.append(Skip(name, "bad-name", f"file name does not follow the KAUH convention: {exc}",
                                f"rename it to {PATTERN}, or import the folder with a manifest"))
            continue
        entries.append(Entry(file=name, path=path, source=SOURCE, recording_id=meta["recording_id"],
                             patient_id=meta["patient_id"], diagnosis=meta["diagnosis"], sex=meta["sex"],
                             age=meta["age"], site=meta["site"], device=meta["device"],
                             annotation=meta["annotation"]))
    return entries, skipped
