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

Three faults stop the whole import instead, because going on would give silently wrong data:

* a diagnosis (or one part of a combined one) that is not in the known vocabulary
  (:data:`~steth_hub.corpus.diagnosis.SYNONYMS`): ``Astma`` or ``asthma?`` would otherwise become
  "not asthma". The error lists every unknown value and the known ones; map a value explicitly
  with ``diagnosis_map={"astma": "asthma"}`` (``--map-diagnosis Astma=asthma``), which may also
  admit a new disease (``--map-diagnosis sarcoidosis=sarcoidosis``);
* a path that leads outside SRC (and outside the manifest's folder): ``../..`` or an absolute
  path elsewhere, unless ``allow_outside=True`` (``--allow-outside-paths``);
* a manifest that is not UTF-8 text CSV (binary, another encoding, a field above
  :data:`MAX_FIELD` characters, a file above :data:`MAX_MANIFEST_BYTES`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from steth_hub.corpus.diagnosis import SYNONYMS, asthma_label, diagnosis_parts
from steth_hub.corpus.entries import Entry, Skip, relative_name
from steth_hub.errors import CorpusError

SOURCE = "manifest"
DEFAULT_NAME = "manifest.csv"
REQUIRED = ("path", "patient_id", "diagnosis")
OPTIONAL = ("label", "sex", "age", "site", "device", "recording_id", "annotation")

_LABELS = {"1": 1, "asthma": 1, "yes": 1, "true": 1, "0": 0, "not_asthma": 0, "not asthma": 0, "no": 0,
           "false": 0}
_SEXES = {"m": "M", "male": "M", "f": "F", "female": "F"}

#: a manifest larger than this is not a manifest
MAX_MANIFEST_BYTES = 64 * 2**20
#: characters in one CSV field (the csv module's own default limit)
MAX_FIELD = 131072
#: canonical diagnosis names
KNOWN_DIAGNOSES = tuple(sorted(set(SYNONYMS.values())))


class UnknownDiagnosis(ValueError):
    """A diagnosis part outside the vocabulary (collected over the whole manifest)."""

    def __init__(self, parts: list[str]):
        super().__init__(", ".join(parts))
        self.parts = parts


class OutsidePath(ValueError):
    """A path that leads outside the source folder (collected over the whole manifest)."""


def parse_diagnosis_map(items) -> dict[str, str]:
    """``["Astma=asthma", ...]`` (or a mapping) -> ``{"astma": "asthma"}``; keys and values lower-case."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, dict) else []
    if not isinstance(items, dict):
        pairs = []
        for item in items:
            old, sep, new = str(item).partition("=")
            if not sep or not old.strip() or not new.strip():
                raise CorpusError(f"diagnosis mapping {item!r} is not OLD=NEW",
                                  fix="write e.g. --map-diagnosis 'Astma=asthma'")
            pairs.append((old, new))
    out = {}
    for old, new in pairs:
        out[" ".join(str(old).split()).lower()] = SYNONYMS.get(" ".join(str(new).split()).lower(),
                                                               " ".join(str(new).split()).lower())
    return out


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


def _resolve(value: str, src: Path, manifest: Path, allow_outside: bool = False) -> Path:
    path = Path(value).expanduser()
    if path.is_absolute():
        found = path
    else:
        found = next((base / path for base in (src, manifest.parent) if (base / path).exists()), src / path)
    if not allow_outside:
        real = found.resolve()
        roots = [src.resolve(), manifest.parent.resolve()]
        if not any(real == root or root in real.parents for root in roots):
            raise OutsidePath(value)
    return found


def _normalise(diagnosis: str, mapping: dict[str, str]) -> str:
    """The canonical name of a diagnosis; unknown parts (after the user's mapping) raise UnknownDiagnosis."""
    text = " ".join(str(diagnosis).split()).lower()
    if text in mapping:  # a whole value mapped ("asthma?" -> asthma)
        parts = [mapping[text]]
    else:
        parts = [mapping.get(part, part) for part in diagnosis_parts(diagnosis)]
    if not parts:
        raise ValueError(f"empty diagnosis {diagnosis!r}")
    allowed = set(KNOWN_DIAGNOSES) | set(mapping.values())
    unknown = [part for part in parts if part not in allowed]
    if unknown:
        raise UnknownDiagnosis(unknown)
    return "+".join(dict.fromkeys(parts))


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


def _row_entry(row: dict, src: Path, manifest: Path, mapping: dict | None = None,
               allow_outside: bool = False) -> Entry:
    value = {key: (row.get(key) or "").strip() for key in REQUIRED + OPTIONAL}
    if not value["path"]:
        raise RowError("bad-row", "the path is empty", "fill in the path column")
    path = _resolve(value["path"], src, manifest, allow_outside)
    if not path.is_file():
        raise RowError("missing", f"file not found ({path})",
                       "correct the path (relative to SRC or to the manifest's folder) or remove the row")
    for key in ("patient_id", "diagnosis"):
        if not value[key]:
            raise RowError("bad-row", f"the {key} is empty", f"fill in the {key} column")
    try:
        normalised = _normalise(value["diagnosis"], mapping or {})
    except UnknownDiagnosis:
        raise
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


def scan_manifest(src: str | Path, manifest: str | Path | None = None, *, diagnosis_map=None,
                  allow_outside: bool = False) -> tuple[list[Entry], list[Skip]]:
    """Entries for the manifest's rows; a :class:`Skip` for each bad row; :class:`CorpusError` for a bad file,
    unknown diagnoses (unless mapped by ``diagnosis_map``) or paths outside SRC (unless ``allow_outside``)."""
    src, manifest = locate_manifest(src, manifest)
    mapping = parse_diagnosis_map(diagnosis_map)
    size = manifest.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise CorpusError(f"the manifest is {size / 2**20:.0f} MiB, above the {MAX_MANIFEST_BYTES // 2**20} MiB a "
                          "manifest can be", path=manifest, fix="pass the CSV that lists the recordings")
    raw = manifest.read_bytes()
    if b"\x00" in raw:
        raise CorpusError("the manifest is a binary file, not CSV text", path=manifest,
                          fix="pass a CSV text file (UTF-8) with a header row: " + ", ".join(REQUIRED))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise CorpusError(f"the manifest is not UTF-8 text (line {line}, byte {exc.start})", path=manifest,
                          fix="save it as UTF-8 CSV (in a spreadsheet: 'CSV UTF-8'; or: iconv -f latin1 -t utf-8)")
    entries: list[Entry] = []
    skipped: list[Skip] = []
    unknown: dict[str, list[int]] = {}
    outside: list[tuple[int, str]] = []
    line = 1
    try:
        import io

        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            raise CorpusError("the manifest is empty", path=manifest,
                              fix=f"write a header row with at least: {', '.join(REQUIRED)}")
        reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames]
        missing = [name for name in REQUIRED if name not in reader.fieldnames]
        if missing:
            raise CorpusError(f"missing column(s) {', '.join(missing)} (found: {', '.join(reader.fieldnames)[:300]})",
                              path=manifest,
                              fix=f"add the column(s); required: {', '.join(REQUIRED)}; "
                                  f"optional: {', '.join(OPTIONAL)} (see docs/corpus.md)")
        for line, row in enumerate(reader, start=2):
            if not any((cell or "").strip() for cell in row.values() if isinstance(cell, str)):
                continue
            try:
                entries.append(_row_entry(row, src, manifest, mapping, allow_outside))
            except UnknownDiagnosis as exc:
                for part in exc.parts:
                    unknown.setdefault(part, []).append(line)
            except OutsidePath as exc:
                outside.append((line, str(exc)))
            except RowError as exc:
                where = (row.get("path") or "").strip() or f"{manifest.name} line {line}"
                skipped.append(Skip(where, exc.code, f"{manifest.name} line {line}: {exc.reason}", exc.fix))
    except csv.Error as exc:
        raise CorpusError(f"the manifest is not valid CSV near line {line + 1} ({exc})", path=manifest,
                          fix=f"check the quoting on that line; a field may hold at most {MAX_FIELD} characters") from exc
    if unknown:
        listed = "; ".join(f"{part!r} (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines[:5]))}"
                           f"{', ...' if len(lines) > 5 else ''})" for part, lines in sorted(unknown.items()))
        example = sorted(unknown)[0]
        raise CorpusError(f"unknown diagnosis value(s): {listed}; known: {', '.join(KNOWN_DIAGNOSES)}",
                          path=manifest,
                          fix=f"correct the spelling, or map each value explicitly: --map-diagnosis "
                              f"'{example}=asthma' (or =normal, =copd, ... or a new disease by its own name)")
    if outside:
        listed = "; ".join(f"line {n}: {p!r}" for n, p in outside[:5]) + (
            f"; ... ({len(outside) - 5} more)" if len(outside) > 5 else "")
        raise CorpusError(f"{len(outside)} path(s) lead outside the source folder {src} ({listed})", path=manifest,
                          fix="move the recordings into the source folder, or pass --allow-outside-paths if "
                              "you trust this manifest")
    return entries, skipped
