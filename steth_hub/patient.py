"""Where one patient's recordings become one screening result, by the rule the evaluation validated.

A clinician auscultates a patient at several sites (KAUH: each site through three stethoscope
filters). :func:`screen_patient` screens every recording with :func:`steth_hub.screening.screen_many`
and aggregates them with :func:`steth_hub.evaluate.level_tables`, the very function the
patient-grouped cross-validation scores with: a recording's P(asthma) is the mean of its clips',
the patient's the mean of the recordings'; the decision is the patient's P(asthma) at the model's
own threshold (as the evaluation decides its patient level). Nothing is re-implemented here, so the
patient result is exactly what the model's reported patient-level figures measured.

The result says which recordings drove the decision (those on the decided side of the threshold,
the furthest first: with a mean, each recording pushes the patient's P(asthma) by
``(p - threshold) / n``) and lists every recording that could not be screened with its reason and
fix; a recording whose audio is identical to an earlier one is counted once and listed as rejected.
Nothing is dropped silently.

Recordings are named ``R1``, ``R2``... with their site, never by their file name: file names can
carry a clinician's annotation (KAUH names hold the diagnosis and the sound type, e.g. ``E W``),
which must never show up as a finding. Only the recording site and the stethoscope filter are
read from a name (by the corpus importers' own parsers), and a manifest's ``site`` overrides it.

Patient facts (sex, age) are shown back and kept in the result; the audio model never sees them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from steth_hub.errors import ConfigError, StethError

#: how the patient-level result is formed (the evaluation's rule, said in words)
AGGREGATION = ("patient P(asthma) = mean over its recordings of each recording's P(asthma) "
               "(the mean over the recording's clips), decided at the model's threshold; "
               "the rule the model's patient-level evaluation scored")
#: manifest columns (patient_id and path are required)
MANIFEST_COLUMNS = ("patient_id", "path", "site", "sex", "age")
#: stethoscope filters in KAUH names
_FILTERS = {"B": "bell", "D": "diaphragm", "E": "extended"}


# --------------------------------------------------------------------------- inputs
@dataclass
class RecordingInput:
    """One recording of a patient: where the file is and where on the chest it was made."""

    path: str
    site: str | None = None


@dataclass
class PatientFacts:
    """What is known about the patient: shown and saved, never a model input."""

    patient_id: str
    sex: str | None = None
    age: float | None = None

    def to_dict(self) -> dict:
        return {"patient_id": self.patient_id, "sex": self.sex, "age": self.age, "model_input": False}


def normalise_sex(value: Any, *, where: str = "sex") -> str | None:
    """``"F"``, ``"M"`` or None; anything else is a :class:`ConfigError` naming ``where``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text in ("f", "female", "w", "woman"):
        return "F"
    if text in ("m", "male", "man"):
        return "M"
    raise ConfigError(f"{where}: {value!r} is not a sex steth-hub records", fix="use F, M, or leave it empty")


def normalise_age(value: Any, *, where: str = "age") -> float | None:
    """Age in years (0-130) or None; anything else is a :class:`ConfigError` naming ``where``."""
    if value is None or str(value).strip() == "":
        return None
    try:
        age = float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a number of years", fix="give the age in years, e.g. 45") from None
    if not 0 <= age <= 130:  # also refuses NaN and infinities
        raise ConfigError(f"{where}: {value!r} is outside 0-130 years", fix="give the age in years, e.g. 45")
    return age


def name_facts(path: str | os.PathLike) -> dict:
    """The recording site and stethoscope filter a KAUH or ICBHI file name gives; ``{}`` otherwise.

    Only these two: the diagnosis and the sound type in a KAUH name are a clinician's findings
    and are never read here.
    """
    from steth_hub.corpus.icbhi import parse_icbhi_name
    from steth_hub.corpus.kauh import parse_kauh_name

    name = Path(os.fspath(path)).name
    try:
        meta = parse_kauh_name(name)
        return {"site": meta.get("site"), "filter": _FILTERS.get(meta.get("filter") or "")}
    except (ValueError, StethError):
        pass
    try:
        meta = parse_icbhi_name(name)
        return {"site": meta.get("site"), "filter": None}
    except (ValueError, StethError):
        return {}


# --------------------------------------------------------------------------- results
@dataclass
class RecordingResult:
    """The screening of one of the patient's recordings (named ``R<n>``, never by its file name)."""

    id: str
    site: str | None
    filter: str | None
    sha256: str
    probability: float
    decision: bool
    n_clips: int
    clip_probabilities: list[float]
    warnings: list[str]
    duration_s: float | None = None
    sample_rate: int | None = None
    #: how far this recording moves the patient's P(asthma) from the threshold: (p - threshold) / n
    push: float = 0.0
    drives: bool = False
    #: whether its decision survived the model's stability checks (None: none were run)
    stable: bool | None = None

    @property
    def label(self) -> str:
        return "asthma" if self.decision else "not_asthma"

    def to_dict(self) -> dict:
        return {"id": self.id, "site": self.site, "filter": self.filter, "sha256": self.sha256,
                "probability": self.probability, "decision": self.decision, "label": self.label,
                "n_clips": self.n_clips, "clip_probabilities": list(self.clip_probabilities),
                "warnings": list(self.warnings), "quality": "warnings" if self.warnings else "ok",
                "duration_s": self.duration_s, "sample_rate": self.sample_rate,
                "push": self.push, "drives_result": self.drives, "stable": self.stable}


@dataclass
class RejectedRecording:
    """A recording that could not be screened, with why and what to do."""

    id: str
    site: str | None
    filter: str | None
    sha256: str | None
    code: str
    message: str
    fix: str | None = None
    #: P(asthma) of a recording rejected for quality (screened, shown, not counted); None otherwise
    probability: float | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "site": self.site, "filter": self.filter, "sha256": self.sha256,
                "code": self.code, "message": self.message, "fix": self.fix, "probability": self.probability}


@dataclass
class PatientResult:
    """One patient's screening: one P(asthma) and decision from all usable recordings.

    ``probability``/``decision`` are None when no recording could be screened (then
    ``rejected`` says why for each). ``deciding`` is the recording that pushed hardest towards
    the decision (its spectrogram and explanation map go into the report).
    """

    patient: PatientFacts
    recordings: list[RecordingResult]
    rejected: list[RejectedRecording]
    probability: float | None
    decision: bool | None
    threshold: float
    model: str
    drivers: list[str] = field(default_factory=list)
    deciding: str | None = None
    aggregation: str = AGGREGATION
    disclaimer: str = ""
    #: recording id -> the file (kept in memory for the report's pictures; never written out)
    paths: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        if self.decision is None:
            return "no_result"
        return "asthma" if self.decision else "not_asthma"

    @property
    def screened(self) -> bool:
        return self.probability is not None

    def to_dict(self) -> dict:
        return {
            "patient": self.patient.to_dict(),
            "probability": self.probability, "decision": self.decision, "label": self.label,
            "threshold": self.threshold, "model": self.model, "aggregation": self.aggregation,
            "n_recordings": len(self.recordings), "n_rejected": len(self.rejected),
            "drivers": list(self.drivers), "deciding_recording": self.deciding,
            "recordings": [r.to_dict() for r in self.recordings],
            "rejected": [r.to_dict() for r in self.rejected],
            "disclaimer": self.disclaimer,
        }

    def __str__(self) -> str:
        if not self.screened:
            head = f"patient {self.patient.patient_id}: no result ({len(self.rejected)} recording(s) rejected)"
        else:
            head = (f"patient {self.patient.patient_id}: P(asthma) = {self.probability:.3f} -> {self.label} "
                    f"(threshold {self.threshold:.3f}, {len(self.recordings)} recordings)")
        return head + f"\n{self.disclaimer}"


# --------------------------------------------------------------------------- the rule
def patient_probability(clip_probabilities: Sequence[Sequence[float]], threshold: float) -> tuple[list[float], float]:
    """Recording and patient P(asthma) from each recording's clip probabilities.

    Calls :func:`steth_hub.evaluate.level_tables`, the function the patient-grouped evaluation
    scores with, on one patient: returns ``(recording probabilities, patient probability)``.
    """
    from steth_hub.evaluate import level_tables

    if not clip_probabilities or any(len(c) == 0 for c in clip_probabilities):
        raise ValueError("every recording needs at least one clip probability")
    rec_ids = [f"R{i}" for i, clips in enumerate(clip_probabilities, start=1) for _ in clips]
    prob = [float(p) for clips in clip_probabilities for p in clips]
    n = len(prob)
    tables = level_tables(rec_ids, ["patient"] * n, [0] * n, [0] * n, prob, [float(threshold)] * n)
    recordings = dict(zip(tables["recording"]["ids"], tables["recording"]["prob"]))
    return ([float(recordings[f"R{i}"]) for i in range(1, len(clip_probabilities) + 1)],
            float(tables["patient"]["prob"][0]))


def _sha256(path: str) -> str | None:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def _audio_sha256(path: str) -> str | None:
    """A fingerprint of the decoded samples (the same audio in two files is the same evidence)."""
    try:
        from steth_hub.audio import decode

        rec = decode(path)
    except Exception:  # noqa: BLE001 - the file is screened (and rejected) elsewhere
        return None
    return hashlib.sha256(np.ascontiguousarray(rec.samples, dtype=np.float32).tobytes()
                          + str(rec.sample_rate).encode()).hexdigest()


def screen_patient(recordings: Iterable[str | os.PathLike | RecordingInput | Mapping], model=None, *,
                   patient: str | PatientFacts = "patient", sex: Any = None, age: Any = None,
                   progress: bool = False, check=None, quality: str = "reject",
                   stability: bool | None = None) -> PatientResult:
    """Screen all of one patient's recordings and give one patient-level result.

    Args:
        recordings: paths, :class:`RecordingInput` or ``{"path", "site"}`` mappings.
        model: None (the default model), a model folder or Hub name, or a loaded Classifier.
        patient: the patient's identifier (or :class:`PatientFacts`).
        sex, age: patient facts (shown, never model inputs); ignored when ``patient`` is PatientFacts.
        progress: show a progress bar.
        quality: ``"reject"`` (default): a recording that fails a quality check of the model's preset
            (clipping, shorter than any training recording), which the evaluation's corpus would have
            rejected, is screened and shown but not counted (listed as rejected, code ``quality``);
            ``"keep"``: counted, with its warnings.
        check: optional ``check(path)`` run before a recording is read (e.g. the demo's size and
            length limits); a :class:`~steth_hub.errors.StethError` it raises rejects that recording.
        stability: each recording's stability checks, as in :func:`steth_hub.screening.screen`.

    Returns:
        A :class:`PatientResult`. A recording that cannot be screened is listed in ``rejected``.
    """
    from steth_hub.screening import DISCLAIMER, load_model, model_name, screen_many

    facts = patient if isinstance(patient, PatientFacts) else PatientFacts(
        str(patient), normalise_sex(sex), normalise_age(age))
    inputs = [_as_input(r) for r in recordings]
    if not inputs:
        raise ConfigError(f"patient {facts.patient_id} has no recordings", fix="give at least one recording file")
    if quality not in ("reject", "keep"):
        raise ConfigError(f"quality={quality!r}", fix='use "reject" (the default) or "keep"')
    classifier = load_model(model)
    threshold = float(classifier.threshold)

    ids = [f"R{i}" for i in range(1, len(inputs) + 1)]
    meta = []
    for item in inputs:
        facts_from_name = name_facts(item.path)
        meta.append({"site": item.site or facts_from_name.get("site"), "filter": facts_from_name.get("filter"),
                     "sha256": _sha256(item.path)})

    # identical audio is one piece of evidence: keep the first, list the others as rejected
    rejected: list[RejectedRecording] = []
    to_screen: list[int] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(inputs):
        if check is not None:
            try:
                check(item.path)
            except StethError as exc:
                rejected.append(RejectedRecording(ids[i], meta[i]["site"], meta[i]["filter"], meta[i]["sha256"],
                                                  exc.code, _no_path(exc.message, item.path), exc.fix))
                continue
        key = _audio_sha256(item.path) if os.path.isfile(item.path) else None
        if key is not None and key in seen:
            rejected.append(RejectedRecording(
                ids[i], meta[i]["site"], meta[i]["filter"], meta[i]["sha256"], "duplicate",
                f"the same audio as {seen[key]}: counted once", "remove the copy or give the other recording"))
            continue
        if key is not None:
            seen[key] = ids[i]
        to_screen.append(i)

    results, failures = screen_many([inputs[i].path for i in to_screen], model=classifier, progress=progress,
                                    stability=stability)
    by_path = {r.source: r for r in results}
    failed = {f["source"]: f for f in failures}
    screened: list[tuple[int, Any]] = []
    for i in to_screen:
        path = inputs[i].path
        result = by_path.get(path) or _match(path, by_path)
        if result is not None:
            flagged = _quality_failures(path, classifier) if quality == "reject" else []
            if flagged:
                rejected.append(RejectedRecording(
                    ids[i], meta[i]["site"], meta[i]["filter"], meta[i]["sha256"], "quality",
                    _no_path("; ".join(flagged), path) + f" [not counted: the evaluation never scored such "
                    f"recordings; its P(asthma) was {result.probability:.3f}]",
                    "record this site again (or count it anyway: --include-flagged)",
                    probability=float(result.probability)))
                continue
            screened.append((i, result))
            continue
        f = failed.get(path) or {"code": "error", "message": "not screened", "fix": None}
        rejected.append(RejectedRecording(ids[i], meta[i]["site"], meta[i]["filter"], meta[i]["sha256"],
                                          str(f.get("code") or "error"), _no_path(str(f.get("message") or ""), path),
                                          f.get("fix")))
    rejected.sort(key=lambda r: int(r.id[1:]))

    rows: list[RecordingResult] = []
    probability = decision = None
    if screened:
        rec_probs, probability = patient_probability([r.clip_probabilities for _, r in screened], threshold)
        decision = bool(probability >= threshold)
        n = len(screened)
        for (i, result), p in zip(screened, rec_probs):
            rows.append(RecordingResult(
                id=ids[i], site=meta[i]["site"], filter=meta[i]["filter"], sha256=meta[i]["sha256"] or "",
                probability=p, decision=bool(p >= threshold), n_clips=int(result.n_clips),
                clip_probabilities=[float(x) for x in result.clip_probabilities],
                warnings=[_no_path(w, inputs[i].path) for w in result.warnings],
                duration_s=_duration(inputs[i].path), sample_rate=_rate(inputs[i].path),
                push=float((p - threshold) / n), stable=result.stable))
    drivers = [r for r in rows if r.decision == decision]
    drivers.sort(key=lambda r: abs(r.push), reverse=True)
    for r in drivers:
        r.drives = True
    return PatientResult(
        patient=facts, recordings=rows, rejected=rejected, probability=probability, decision=decision,
        threshold=threshold, model=model_name(classifier), drivers=[r.id for r in drivers],
        deciding=drivers[0].id if drivers else None, disclaimer=DISCLAIMER,
        paths={ids[i]: inputs[i].path for i in range(len(inputs))})


def _quality_failures(path: str, classifier) -> list[str]:
    """The model preset's quality checks (clipping, minimum duration) that this recording fails.

    Screening only warns about them; a training corpus, and so the evaluation, rejects such
    recordings. Uses the screening pipeline's own checks (:class:`steth_hub.screening.ScreeningPipeline`).
    """
    from steth_hub.screening import ScreeningPipeline, to_recording

    try:
        pipeline = ScreeningPipeline(classifier)
        recording = to_recording(path, None)
        _, warnings = pipeline.clips(recording, path)
    except StethError:  # screened a moment ago; a failure now is not a quality verdict
        return []
    return list(warnings)


def _as_input(item) -> RecordingInput:
    if isinstance(item, RecordingInput):
        return RecordingInput(os.fspath(item.path), item.site)
    if isinstance(item, Mapping):
        if not item.get("path"):
            raise ConfigError(f"a recording entry has no path: {dict(item)!r}", fix="give each recording a path")
        site = item.get("site")
        return RecordingInput(os.fspath(item["path"]), str(site).strip() if site not in (None, "") else None)
    return RecordingInput(os.fspath(item))


def _match(path: str, by_path: Mapping[str, Any]):
    """The result whose source is the same file as ``path`` (decoders may normalise the path)."""
    try:
        target = Path(path).resolve()
    except OSError:
        return None
    for source, result in by_path.items():
        try:
            if Path(source).resolve() == target:
                return result
        except OSError:
            continue
    return None


def _no_path(text: str, path: str) -> str:
    """A message without the file's path or name (a name can carry a clinician's annotation)."""
    for form in sorted({path, os.fspath(Path(path).resolve()), Path(path).name, Path(path).stem}, key=len,
                       reverse=True):
        if form:
            text = text.replace(form, "the recording")
    return text


def _info(path: str):
    try:
        import soundfile as sf

        return sf.info(path)
    except Exception:  # noqa: BLE001 - only descriptive
        return None


def _duration(path: str) -> float | None:
    info = _info(path)
    return round(float(info.duration), 3) if info is not None else None


def _rate(path: str) -> int | None:
    info = _info(path)
    return int(info.samplerate) if info is not None else None


# --------------------------------------------------------------------------- manifests
@dataclass
class PatientEntry:
    """One patient of a manifest: facts and recordings."""

    facts: PatientFacts
    recordings: list[RecordingInput]


def read_manifest(path: str | os.PathLike) -> list[PatientEntry]:
    """Patients and their recordings from a CSV or JSON manifest.

    CSV (or TSV): a header with ``patient_id``, ``path`` and optionally ``site``, ``sex``, ``age``;
    one row per recording. JSON: a list of such rows, or ``{"patients": [{"patient_id", "sex",
    "age", "recordings": [{"path", "site"}]}]}``. Relative paths are taken from the manifest's
    folder. Errors name the manifest, the row and the fix.
    """
    path = Path(path)
    fix = (f"give a CSV with the columns {', '.join(MANIFEST_COLUMNS)} (patient_id and path required), "
           "or the same rows as JSON")
    if not path.is_file():
        raise ConfigError("manifest not found", path=path, fix=fix)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the manifest as UTF-8 text ({exc})", path=path, fix=fix) from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"the manifest is not valid JSON ({exc})", path=path, fix=fix) from exc
        rows = _json_rows(data, path, fix)
    else:
        rows = _csv_rows(text, path, fix)
    patients: dict[str, PatientEntry] = {}
    for number, row in rows:
        where = f"{path.name} row {number}"
        pid = str(row.get("patient_id") or "").strip()
        rec = str(row.get("path") or "").strip()
        if not pid or not rec:
            raise ConfigError(f"{where}: patient_id and path are required", path=path, fix=fix)
        sex = normalise_sex(row.get("sex"), where=f"{where} sex")
        age = normalise_age(row.get("age"), where=f"{where} age")
        entry = patients.setdefault(pid, PatientEntry(PatientFacts(pid, sex, age), []))
        for key, value in (("sex", sex), ("age", age)):
            known = getattr(entry.facts, key)
            if value is not None and known is not None and known != value:
                raise ConfigError(f"{where}: patient {pid} has {key} {value!r} here but {known!r} in an earlier row",
                                  path=path, fix=f"give one {key} per patient")
            if known is None and value is not None:
                setattr(entry.facts, key, value)
        file = Path(rec).expanduser()
        if not file.is_absolute():
            file = path.parent / file
        site = row.get("site")
        entry.recordings.append(RecordingInput(os.fspath(file), str(site).strip() or None if site is not None
                                               else None))
    if not patients:
        raise ConfigError("the manifest lists no recordings", path=path, fix=fix)
    return list(patients.values())


def _csv_rows(text: str, path: Path, fix: str) -> list[tuple[int, dict]]:
    lines = text.splitlines()
    delimiter = "\t" if lines and "\t" in lines[0] else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    header = [str(h or "").strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("patient_id", "path") if c not in header]
    if missing:
        raise ConfigError(f"the manifest lacks the column(s) {', '.join(missing)} (has: {', '.join(header) or 'none'})",
                          path=path, fix=fix)
    rows = []
    for number, raw in enumerate(reader, start=2):
        if raw.get(None):  # csv.DictReader puts the cells beyond the header under None
            raise ConfigError(f"row {number} has more cells than the header ({len(header)})", path=path,
                              fix='put paths that contain commas in double quotes ("BP1_N,N,P L M,..wav"), '
                                  "or use a JSON manifest")
        row = {str(k or "").strip().lower(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
        if any(row.get(c) for c in MANIFEST_COLUMNS):
            rows.append((number, row))
    return rows


def _json_rows(data: Any, path: Path, fix: str) -> list[tuple[int, dict]]:
    if isinstance(data, Mapping) and isinstance(data.get("patients"), list):
        rows = []
        for p in data["patients"]:
            if not isinstance(p, Mapping) or not isinstance(p.get("recordings"), list):
                raise ConfigError("each patient needs a list of recordings", path=path, fix=fix)
            for r in p["recordings"]:
                r = {"path": r} if isinstance(r, str) else dict(r)
                rows.append({"patient_id": p.get("patient_id"), "sex": p.get("sex"), "age": p.get("age"), **r})
        return list(enumerate(rows, start=1))
    if isinstance(data, list) and all(isinstance(r, Mapping) for r in data):
        return [(i, {str(k).lower(): v for k, v in r.items()}) for i, r in enumerate(data, start=1)]
    raise ConfigError("the JSON manifest is neither a list of rows nor {\"patients\": [...]}", path=path, fix=fix)
