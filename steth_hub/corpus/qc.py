"""Hygiene at import, and the QC report that says what was imported and what was not.

A corpus is only as honest as its worst file. Before anything is written, every recording
found by an importer goes through these checks, in this order:

1. **decoding** (:func:`decode_entries`): a file that does not decode, is empty, silent, not
   finite, too long or below the minimum sample rate is skipped with the
   :class:`~steth_hub.errors.AudioError` code, reason and fix. Oddities that do not stop
   decoding (truncated WAV, stereo mixed down, low sample rate) are kept as warnings.
2. **content conflicts** (:func:`check_hygiene`): identical audio (same
   :meth:`Recording.content_hash`) under different patients or different labels cannot be
   trusted for either; *every* copy is left out and the group is reported as a conflict.
3. **metadata conflicts**: one patient whose files disagree on sex, age or diagnosis. When the
   label itself disagrees the patient's true label is unknown, so all of the patient's files
   are left out; otherwise the files that agree with a strict majority are kept and the others
   left out (no majority: all left out).
4. **duplicates**: identical audio within one patient and one label is one recording; the
   first by recording id is kept and the others reported as collapsed.
5. **recording ids** are made unique (``#2``...) with a warning, should two different
   recordings parse to the same id.

:func:`build_report` turns the outcome into ``qc.json`` (``imported``, ``skipped``,
``conflicts``, ``duplicates``, ``metadata_conflicts``, ``counts``), and
:func:`format_report` into the summary printed after an import. Every file found appears
exactly once, either in ``imported`` or in ``skipped``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from steth_hub.corpus.entries import Entry, Skip
from steth_hub.errors import AudioError

CONFLICT_FIX = ("find out which subject and diagnosis the recording belongs to and correct the source; "
                "until then every copy is left out")
METADATA_FIX = "correct the metadata so that all of the patient's recordings agree"
METADATA_FIELDS = ("sex", "age", "diagnosis_normalised", "label")


@dataclass
class Hygiene:
    """What :func:`check_hygiene` decided: the recordings kept, and every file left out with why."""

    kept: list[Entry]
    skipped: list[Skip] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    metadata_conflicts: list[dict] = field(default_factory=list)


def decode_entries(entries: Iterable[Entry], *, progress: bool = False,
                   desc: str = "decoding") -> tuple[list[Entry], list[Skip]]:
    """Decode each entry once: fill its sample rate, duration, content hash and warnings.

    Entries that cannot be used come back as :class:`Skip` records (the batch goes on).
    """
    from tqdm.auto import tqdm

    from steth_hub.audio import decode

    entries = list(entries)
    decoded: list[Entry] = []
    skipped: list[Skip] = []
    for entry in tqdm(entries, desc=desc, unit="file", disable=not progress, leave=False):
        try:
            recording = decode(entry.data if entry.data is not None else entry.path)
        except AudioError as exc:
            skipped.append(Skip(entry.file, exc.code, exc.message, exc.fix))
            continue
        entry.sample_rate = int(recording.original_sample_rate)
        entry.duration = float(recording.duration)
        entry.content_hash = recording.content_hash()
        entry.warnings = list(recording.warnings)
        decoded.append(entry)
    return decoded, skipped


def _order(entry: Entry) -> tuple[str, str]:
    return entry.recording_id, entry.file


def _by_hash(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    groups: dict[str, list[Entry]] = defaultdict(list)
    for entry in sorted(entries, key=_order):
        groups[entry.content_hash].append(entry)
    return groups


def _content_conflicts(entries: list[Entry], hygiene: Hygiene) -> list[Entry]:
    survivors: list[Entry] = []
    for digest, group in _by_hash(entries).items():
        patients = sorted({e.patient_id for e in group})
        labels = sorted({e.label for e in group})
        if len(patients) == 1 and len(labels) == 1:
            survivors.extend(group)
            continue
        hygiene.conflicts.append({
            "files": [e.file for e in group], "recording_ids": [e.recording_id for e in group],
            "patients": patients, "labels": labels,
            "diagnoses": sorted({e.diagnosis_normalised for e in group}), "content_hash": digest,
        })
        for entry in group:
            others = ", ".join(e.file for e in group if e is not entry)
            hygiene.skipped.append(Skip(
                entry.file, "conflict",
                f"identical audio under {len(patients)} patient(s) {', '.join(patients)} with label(s) "
                f"{', '.join(map(str, labels))}; same content as: {others}", CONFLICT_FIX))
    return survivors


def _describe(meta: dict) -> str:
    return ", ".join(f"{key}={meta[key]}" for key in METADATA_FIELDS)


def _metadata_conflicts(entries: list[Entry], hygiene: Hygiene) -> list[Entry]:
    by_patient: dict[str, list[Entry]] = defaultdict(list)
    for entry in sorted(entries, key=_order):
        by_patient[entry.patient_id].append(entry)
    survivors: list[Entry] = []
    for patient, files in by_patient.items():
        versions: dict[tuple, list[Entry]] = defaultdict(list)
        for entry in files:
            versions[tuple(entry.metadata()[key] for key in METADATA_FIELDS)].append(entry)
        if len(versions) == 1:
            survivors.extend(files)
            continue
        fields = [key for i, key in enumerate(METADATA_FIELDS) if len({v[i] for v in versions}) > 1]
        majority = max(versions.values(), key=len)
        if "label" in fields or len(majority) * 2 <= len(files):
            kept: list[Entry] = []
            why = "the label differs" if "label" in fields else "no version is held by a majority of the files"
        else:
            kept = majority
            why = "the majority of the patient's files say otherwise"
        kept_ids = {id(e) for e in kept}
        excluded = [e for e in files if id(e) not in kept_ids]
        hygiene.metadata_conflicts.append({
            "patient_id": patient, "fields": fields,
            "versions": [{**dict(zip(METADATA_FIELDS, key)), "files": [e.file for e in group]}
                         for key, group in versions.items()],
            "kept": [e.file for e in kept], "excluded": [e.file for e in excluded],
        })
        survivors.extend(kept)
        for entry in excluded:
            hygiene.skipped.append(Skip(
                entry.file, "metadata-conflict",
                f"patient {patient}'s files disagree on {', '.join(fields)} ({why}); this file says "
                f"{_describe(entry.metadata())}", METADATA_FIX))
    return survivors


def _duplicates(entries: list[Entry], hygiene: Hygiene) -> list[Entry]:
    survivors: list[Entry] = []
    for digest, group in _by_hash(entries).items():
        kept, *copies = group
        survivors.append(kept)
        if not copies:
            continue
        hygiene.duplicates.append({
            "kept": kept.file, "collapsed": [e.file for e in copies], "recording_id": kept.recording_id,
            "patient_id": kept.patient_id, "content_hash": digest,
        })
        for entry in copies:
            hygiene.skipped.append(Skip(
                entry.file, "duplicate",
                f"identical audio to {kept.file} (same patient {kept.patient_id}, same label); one copy kept",
                "nothing to do: the copy kept stands for both"))
    return survivors


def _unique_ids(entries: list[Entry]) -> list[Entry]:
    seen: Counter[str] = Counter()
    for entry in sorted(entries, key=_order):
        seen[entry.recording_id] += 1
        if seen[entry.recording_id] > 1:
            new = f"{entry.recording_id}#{seen[entry.recording_id]}"
            entry.warnings.append(f"recording id {entry.recording_id} is used by another file; renamed {new}")
            entry.recording_id = new
    return sorted(entries, key=_order)


def check_hygiene(entries: Iterable[Entry]) -> Hygiene:
    """Content conflicts, metadata conflicts, duplicates and id clashes among decoded entries."""
    hygiene = Hygiene(kept=[])
    remaining = _content_conflicts(list(entries), hygiene)
    remaining = _metadata_conflicts(remaining, hygiene)
    remaining = _duplicates(remaining, hygiene)
    hygiene.kept = _unique_ids(remaining)
    return hygiene


def build_report(*, source: str, src: str | list[str], kept: list[Entry], skipped: list[Skip],
                 hygiene: Hygiene, extra: dict | None = None) -> dict:
    """The ``qc.json`` record of one import (or merge)."""
    imported = [{"file": e.file, "recording_id": e.recording_id, "patient_id": e.patient_id,
                 "warnings": list(e.warnings)} for e in kept]
    all_skipped = sorted(skipped + hygiene.skipped, key=lambda s: (s.code, s.file))
    counts = {
        "found": len(imported) + len(all_skipped),
        "imported": len(imported),
        "skipped": len(all_skipped),
        "patients": len({e.patient_id for e in kept}),
        "skipped_by_code": dict(sorted(Counter(s.code for s in all_skipped).items())),
        "conflicts": len(hygiene.conflicts),
        "duplicates": sum(len(d["collapsed"]) for d in hygiene.duplicates),
        "metadata_conflicts": len(hygiene.metadata_conflicts),
        "with_warnings": sum(1 for e in kept if e.warnings),
    }
    report = {"source": source, "src": src, "counts": counts, "imported": imported,
              "skipped": [s.to_dict() for s in all_skipped], "conflicts": hygiene.conflicts,
              "duplicates": hygiene.duplicates, "metadata_conflicts": hygiene.metadata_conflicts}
    if extra:
        report.update(extra)
    return report


def _warning_kind(text: str) -> str:
    return text.split(":")[0]


def format_report(qc: dict, *, max_listed: int = 5) -> str:
    """The printed QC summary: counts, every file left out with its reason, and the warnings."""
    counts = qc["counts"]
    lines = [f"QC ({qc['source']}): {counts['found']} file(s) found, {counts['imported']} imported "
             f"({counts['patients']} patients), {counts['skipped']} left out"]
    if counts["skipped_by_code"]:
        lines.append("  left out by reason: " + ", ".join(f"{code} {n}" for code, n in
                                                           counts["skipped_by_code"].items()))
    for group in qc["conflicts"]:
        lines.append(f"  conflict: identical audio under {', '.join(group['patients'])} "
                     f"(labels {', '.join(map(str, group['labels']))}): {' == '.join(group['files'])}")
    for dup in qc["duplicates"]:
        lines.append(f"  duplicate: kept {dup['kept']}; collapsed {', '.join(dup['collapsed'])}")
    for meta in qc["metadata_conflicts"]:
        lines.append(f"  metadata conflict: {meta['patient_id']} disagrees on {', '.join(meta['fields'])}; "
                     f"left out {', '.join(meta['excluded'])}")
    for skip in qc["skipped"]:
        if skip["code"] in ("conflict", "duplicate", "metadata-conflict"):
            continue
        fix = f" (fix: {skip['fix']})" if skip.get("fix") else ""
        lines.append(f"  skipped [{skip['code']}] {skip['file']}: {skip['reason']}{fix}")
    for source in qc.get("sources", []):
        counts_of = source.get("counts", {})
        lines.append(f"  from {source['path']} ({source.get('source')}): {source.get('n_recordings')} recordings; "
                     f"{counts_of.get('skipped', 0)} file(s) were left out at its import (see its qc.json)")
    kinds: dict[str, list[str]] = defaultdict(list)
    for row in qc["imported"]:
        for warning in row["warnings"]:
            kinds[_warning_kind(warning)].append(row["file"])
    for kind, files in sorted(kinds.items()):
        listed = ", ".join(files[:max_listed]) + (f", ... ({len(files) - max_listed} more)"
                                                   if len(files) > max_listed else "")
        lines.append(f"  warning [{kind}] in {len(files)} imported file(s): {listed}")
    return "\n".join(lines)
