"""Building a corpus folder: find recordings, check them, split patients into folds, store.

:func:`import_corpus` runs one importer (``kauh``, ``icbhi``, ``manifest``) on a folder;
:func:`merge_corpora` joins corpora already imported (KAUH + ICBHI is what training uses),
checking duplicates and conflicts again *across* them by content hash and recomputing the
folds over the joined patients. Both end in the same steps: hygiene (``qc.py``), patient
folds (``splits.py``) and an atomic write (``store.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import steth_hub.corpus.icbhi as icbhi
import steth_hub.corpus.kauh as kauh
import steth_hub.corpus.manifest as manifest_importer
from steth_hub.corpus.entries import AUDIO_EXTENSIONS, Entry, Skip
from steth_hub.corpus.qc import Hygiene, build_report, check_hygiene, decode_entries, format_report
from steth_hub.corpus.splits import patient_folds, splits_record
from steth_hub.corpus.store import check_destination, corpus_info, load_corpus, write_corpus
from steth_hub.errors import CorpusError

#: importer name -> scanner(src, manifest) returning (entries, skipped)
IMPORTERS: dict[str, Callable[..., tuple[list[Entry], list[Skip]]]] = {
    "kauh": lambda src, manifest=None: kauh.scan_kauh(src),
    "icbhi": lambda src, manifest=None: icbhi.scan_icbhi(src),
    "manifest": manifest_importer.scan_manifest,
}


@dataclass
class ImportReport:
    """What an import (or merge) produced: the corpus folder and its QC, info and splits records."""

    out: Path
    qc: dict
    info: dict
    splits: dict

    @property
    def imported(self) -> list[dict]:
        return self.qc["imported"]

    @property
    def skipped(self) -> list[dict]:
        return self.qc["skipped"]

    @property
    def conflicts(self) -> list[dict]:
        return self.qc["conflicts"]

    @property
    def duplicates(self) -> list[dict]:
        return self.qc["duplicates"]

    def summary(self) -> str:
        """The printed summary: QC, then the corpus written and its folds."""
        folds = ", ".join(f"{row['fold']}: {row['patients']} patients ({row['asthma_patients']} asthma), "
                          f"{row['recordings']} recordings" for row in self.splits["summary"])
        return (f"{format_report(self.qc)}\n"
                f"wrote {self.out}: {self.info['n_recordings']} recordings, {self.info['n_patients']} patients "
                f"({self.info['n_asthma_patients']} with asthma)\n"
                f"folds ({self.splits['method']}, seed {self.splits['seed']}): {folds}")

    def __str__(self) -> str:
        return self.summary()


def _nothing_left(source: str, skipped: list[Skip]) -> CorpusError:
    shown = "; ".join(f"{s.file}: [{s.code}] {s.reason}" for s in skipped[:5])
    more = f"; ... ({len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return CorpusError(f"no recording of the {source} corpus could be imported ({len(skipped)} left out: "
                       f"{shown}{more})", fix="correct the files named above, then import again")


def _finish(source: str, src, out: Path, kept: list[Entry], skipped: list[Skip], hygiene: Hygiene, *,
            n_folds: int, seed: int, qc_extra: dict | None = None, info_extra: dict | None = None,
            overwrite: bool = False) -> ImportReport:
    if not kept:
        raise _nothing_left(source, skipped + hygiene.skipped)
    patient_ids = [e.patient_id for e in kept]
    labels = [e.label for e in kept]
    folds = patient_folds(patient_ids, labels, n_folds=n_folds, seed=seed)
    splits = splits_record(folds, patient_ids, labels, n_folds=n_folds, seed=seed)
    qc = build_report(source=source, src=src, kept=kept, skipped=skipped, hygiene=hygiene, extra=qc_extra)
    info = corpus_info(source, kept, src=src, extra=info_extra)
    write_corpus(out, kept, splits=splits, qc=qc, info=info, overwrite=overwrite)
    return ImportReport(out=Path(out), qc=qc, info=info, splits=splits)


def import_corpus(kind: str, src: str | Path, out: str | Path, *, manifest: str | Path | None = None,
                  n_folds: int = 5, seed: int = 0, progress: bool = True, diagnosis_map=None,
                  allow_outside: bool = False, overwrite: bool = False) -> ImportReport:
    """Import the recordings in ``src`` with the ``kind`` importer into the corpus folder ``out``.

    Bad files are skipped and reported (``qc.json`` and :meth:`ImportReport.summary`); problems
    that stop the whole import (unknown kind, missing folder or manifest, too few patients for
    the folds, nothing importable) raise :class:`~steth_hub.errors.CorpusError`. ``out`` is
    replaced only when the new corpus is complete.

    ``diagnosis_map`` (``{"Astma": "asthma"}`` or ``["Astma=asthma"]``) and ``allow_outside`` are for
    the manifest importer (see :mod:`steth_hub.corpus.manifest`).
    """
    if kind not in IMPORTERS:
        raise CorpusError(f"unknown corpus kind {kind!r}", fix=f"use one of: {', '.join(IMPORTERS)}")
    if manifest is not None and kind != "manifest":
        raise CorpusError(f"--manifest is for the manifest importer, not {kind}",
                          fix=f"drop --manifest, or use: steth corpus import manifest SRC OUT --manifest CSV")
    if (diagnosis_map or allow_outside) and kind != "manifest":
        raise CorpusError(f"--map-diagnosis and --allow-outside-paths are for the manifest importer, not {kind}",
                          fix="drop them, or import with: steth corpus import manifest SRC OUT")
    src = Path(src)
    if not src.exists() or (kind != "manifest" and not src.is_dir()):
        raise CorpusError("source folder not found", path=src, fix="pass the folder that holds the recordings")
    out = check_destination(out, [src if src.is_dir() else src.parent], overwrite=overwrite)
    extra = {"diagnosis_map": diagnosis_map, "allow_outside": allow_outside} if kind == "manifest" else {}
    entries, skipped = IMPORTERS[kind](src, manifest=manifest, **extra)
    if not entries and not skipped:
        raise CorpusError("no recordings found", path=src,
                          fix=f"check the folder: recordings end in {', '.join(AUDIO_EXTENSIONS)}")
    decoded, bad = decode_entries(entries, progress=progress, desc=f"importing {kind}")
    hygiene = check_hygiene(decoded)
    return _finish(kind, str(src.resolve()), out, hygiene.kept, skipped + bad, hygiene,
                   n_folds=n_folds, seed=seed, overwrite=overwrite)


def _entries_from(corpus, name: str) -> list[Entry]:
    warnings = {row["recording_id"]: row["warnings"] for row in corpus.qc.get("imported", [])}
    entries = []
    for row in corpus.dataset:
        audio = row["audio"]
        entries.append(Entry(
            file=f"{name}/{audio['path']}", data=audio["bytes"], recording_id=row["recording_id"],
            patient_id=row["patient_id"], diagnosis=row["diagnosis"],
            diagnosis_normalised=row["diagnosis_normalised"], label=int(row["label"]), source=row["source"],
            sex=row["sex"], age=row["age"], site=row["site"], device=row["device"],
            annotation=row["annotation"], sample_rate=row["sample_rate"], duration=row["duration"],
            content_hash=row["content_hash"], warnings=list(warnings.get(row["recording_id"], []))))
    return entries


def merge_corpora(sources: Sequence[str | Path], out: str | Path, *, n_folds: int = 5,
                  seed: int = 0, overwrite: bool = False) -> ImportReport:
    """Join imported corpora into ``out``: hygiene again across them, folds recomputed over all patients.

    Each recording is named ``<corpus folder name>/<original file>`` in the merged QC report; the
    QC counts of each source are kept under ``sources``.
    """
    if not sources:
        raise CorpusError("nothing to merge", fix="pass the corpus folders to merge: steth corpus merge OUT SRC...")
    paths = [Path(s) for s in sources]
    out = check_destination(out, paths, overwrite=overwrite)
    entries: list[Entry] = []
    described = []
    for path in paths:
        corpus = load_corpus(path)
        entries.extend(_entries_from(corpus, path.name))
        described.append({"path": str(path.resolve()), "source": corpus.info.get("source"),
                          "n_recordings": len(corpus), "n_patients": corpus.info.get("n_patients"),
                          "counts": corpus.qc.get("counts", {}), "skipped": corpus.qc.get("skipped", [])})
    hygiene = check_hygiene(entries)
    kinds = sorted({e.source for e in hygiene.kept})
    brief = [{k: d[k] for k in ("path", "source", "n_recordings", "n_patients")} for d in described]
    return _finish("merged", [d["path"] for d in described], out, hygiene.kept, [], hygiene,
                   n_folds=n_folds, seed=seed, overwrite=overwrite, qc_extra={"sources": described},
                   info_extra={"sources": brief, "kinds": kinds})
