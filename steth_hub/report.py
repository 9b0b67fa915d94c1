"""The clinician's report: one standard page per patient, as PDF, HTML, JSON or HL7 FHIR R4.

:func:`build_report` gathers, for one :class:`~steth_hub.patient.PatientResult`:

* the patient facts (identifier, sex, age: shown, never model inputs);
* every recording (``R1``, ``R2``... with site and stethoscope filter, never the file name, which
  can carry a clinician's annotation), its P(asthma), decision, clips and quality warnings, and
  whether it drove the patient's result; every rejected recording with the reason;
* the patient-level P(asthma) and decision, formed by the model's own aggregation rule;
* the model's validated performance from the evaluation stored in its ``steth.json``: the
  patient-level AUROC, sensitivity and specificity with their 95% patient-bootstrap intervals,
  pooled and within each source (pooled figures flatter a model that tells the corpora apart);
* the three-window log-mel spectrogram and the explanation map of the deciding recording
  (:func:`steth_hub.explain`; when no explainer is installed the page says so);
* the model's identity and version, its intended use, and the disclaimer.

:func:`render_html` fills ``templates/patient_report.html.j2`` (jinja2); :func:`render_pdf` renders
the same HTML with xhtml2pdf (pure Python on reportlab: nothing to download, no browser);
:func:`to_fhir` builds a FHIR R4 ``Bundle`` (a ``DiagnosticReport`` with one ``Observation`` per
recording and one for the patient-level result), validated with ``fhir.resources.R4B`` (FHIR 4.3,
the R4-compatible release); :func:`report_json` is the plain JSON. :func:`write_report` picks the
form from the file name (``.pdf``, ``.html``, ``.json``, ``.fhir.json``) and writes atomically.

Needs the ``report`` extra (``pip install 'steth-hub[report]'``); importing this module imports
none of torch, matplotlib, xhtml2pdf or fhir.resources.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import io
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from steth_hub.errors import ConfigError, StethError

REPORT_FORMAT = "steth-hub-patient-report/1"
TEMPLATE = "patient_report.html.j2"
#: what the report is for (the model card's intended use, in short)
INTENDED_USE = ("Screening support for clinicians: flags patients whose lung sounds resemble those of the "
                "asthma patients the model learned from, so that a clinician can prioritise spirometry or a "
                "specialist assessment. Recordings made like the training data (an electronic stethoscope on "
                "the chest wall). Not for diagnosis, and not for any decision to start, change or stop treatment.")
DISCLAIMER = ("Screening support, not a diagnosis. A negative result does not rule asthma out; a positive one "
              "does not establish it. A clinician must confirm any result.")
#: the file name endings write_report understands, longest first
FORMATS = (".fhir.json", ".json", ".html", ".htm", ".pdf")
#: the FHIR code system for steth-hub's own codes
CODE_SYSTEM = "https://github.com/steth-hub/steth-hub/fhir/CodeSystem/steth-hub"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_INSTALL = "pip install 'steth-hub[report]'"


# --------------------------------------------------------------------------- the report's content
@dataclass
class Report:
    """Everything one patient's page shows (``data``, JSON-ready) and its pictures (PNG bytes)."""

    data: dict
    spectrogram_png: bytes | None = None
    explanation_png: bytes | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self.data))


def _measure(entry: Any) -> dict | None:
    """``{"value", "low", "high"}`` of a measured metric, else None."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("value"), (int, float)):
        return None
    out = {"value": float(entry["value"])}
    for key in ("low", "high"):
        out[key] = float(entry[key]) if isinstance(entry.get(key), (int, float)) else None
    return out


def _block(block: Any) -> dict:
    block = block if isinstance(block, Mapping) else {}
    return {"auroc": _measure(block.get("auroc")), "sensitivity": _measure(block.get("sensitivity")),
            "specificity": _measure(block.get("specificity")), "n_patients": block.get("n"),
            "n_asthma": block.get("n_pos")}


def validated_performance(metadata: Mapping | None) -> dict:
    """The model's patient-level performance from the evaluation in its ``steth.json``.

    Returns ``{"available", "note", "pooled", "within_source": [...], "method", ...}``; a model
    without an evaluation, or with only a quick smoke run, is ``available: False`` with a note
    saying its accuracy is unknown.
    """
    evaluation = (metadata or {}).get("evaluation")
    model = evaluation.get("model") if isinstance(evaluation, Mapping) else None
    levels = model.get("levels") if isinstance(model, Mapping) else None
    patient = levels.get("patient") if isinstance(levels, Mapping) else None
    if not isinstance(patient, Mapping) or _measure(patient.get("auroc")) is None:
        return {"available": False, "note": "This model carries no evaluation: its accuracy is unknown."}
    if evaluation.get("quick"):
        return {"available": False, "note": "This model was evaluated only by a quick smoke run: its accuracy is "
                                            "unknown."}
    within = []
    groups = model.get("subgroups") if isinstance(model.get("subgroups"), Mapping) else {}
    for name, entry in groups.items():
        if str(name).startswith("source="):
            row = _block(entry)
            row["source"] = str(name).split("=", 1)[1]
            within.append(row)
    protocol = evaluation.get("protocol") if isinstance(evaluation.get("protocol"), Mapping) else {}
    bootstrap = protocol.get("bootstrap") if isinstance(protocol.get("bootstrap"), Mapping) else {}
    alpha = bootstrap.get("alpha", 0.05)
    level = int(round(100 * (1 - float(alpha)))) if isinstance(alpha, (int, float)) else 95
    return {
        "available": True,
        "note": None,
        "pooled": _block(patient),
        "within_source": within,
        "method": str(evaluation.get("method") or "patient-grouped cross-validation"),
        "threshold_rule": str(protocol.get("threshold") or "chosen on validation patients"),
        "aggregation": str(protocol.get("aggregation") or ""),
        "interval": f"{level}% percentile bootstrap over patients",
        "evaluation_name": evaluation.get("name"),
    }


def model_identity(classifier) -> dict:
    """Name, classifier plugin, threshold, the steth-hub version it was saved with, a fingerprint of
    its saved settings (two reports with the same fingerprint come from the same model settings) and,
    when the classifier keeps its folder, the sha256 prefix of its weights."""
    from steth_hub import __version__
    from steth_hub.screening import model_name

    meta = dict(getattr(classifier, "metadata", None) or {})
    settings = {"plugin": classifier.plugin_name, "threshold": float(classifier.threshold),
                "sample_rate": int(classifier.sample_rate), "preset": classifier.preset, "metadata": meta}
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    training = meta.get("training") if isinstance(meta.get("training"), Mapping) else {}
    weights = None
    folder = getattr(classifier, "directory", None)  # known when the classifier keeps its folder
    if folder is not None and (Path(folder) / "model.safetensors").is_file():
        digest = hashlib.sha256()
        with open(Path(folder) / "model.safetensors", "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        weights = digest.hexdigest()[:16]
    return {
        "name": model_name(classifier),
        "classifier": classifier.plugin_name,
        "threshold": float(classifier.threshold),
        "version": str(meta.get("version") or meta.get("revision") or "unversioned"),
        "saved_with": f"steth-hub {meta.get('steth_hub_version') or 'unknown'}",
        "reported_with": f"steth-hub {__version__}",
        "fingerprint": fingerprint,
        "weights_sha256": weights,
        "trained_on": ({"patients": training.get("n_patients"), "recordings": training.get("n_recordings")}
                       if training else None),
        "limitations": [str(x) for x in meta.get("limitations") or [] if isinstance(x, str)],
    }


def build_report(result, model=None, *, pictures: bool = True, created: str | None = None) -> Report:
    """The content of one patient's page from a :class:`~steth_hub.patient.PatientResult`.

    Args:
        result: the patient's screening (:func:`steth_hub.patient.screen_patient`).
        model: the model that screened it (None: the default, as ``screen_patient``).
        pictures: draw the deciding recording's spectrogram and explanation map (needs the
            ``explain`` extra; without it the page says the pictures are unavailable).
        created: the report's time stamp (ISO 8601, UTC); default now.
    """
    from steth_hub.screening import load_model

    classifier = load_model(model)
    created = created or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    performance = validated_performance(getattr(classifier, "metadata", None))
    deciding = next((r for r in result.recordings if r.id == result.deciding), None)
    data = {
        "format": REPORT_FORMAT,
        "created": created,
        "title": "Lung-sound asthma screening: patient report",
        "patient": result.patient.to_dict(),
        "result": {
            "probability": result.probability, "decision": result.decision, "label": result.label,
            "threshold": result.threshold, "aggregation": result.aggregation,
            "n_recordings": len(result.recordings), "n_rejected": len(result.rejected),
            "drivers": list(result.drivers), "deciding_recording": result.deciding,
            "statement": _statement(result),
        },
        "recordings": [r.to_dict() for r in result.recordings],
        "rejected": [r.to_dict() for r in result.rejected],
        "performance": performance,
        "model": model_identity(classifier),
        "intended_use": INTENDED_USE,
        "disclaimer": DISCLAIMER,
        "pictures": {"recording": result.deciding, "spectrogram": False, "explanation": False, "explainer": None,
                     "notes": []},
    }
    report = Report(data=data)
    if pictures and deciding is not None:
        _draw_pictures(report, result, deciding, classifier)
    elif deciding is None:
        data["pictures"]["notes"].append("no recording could be screened, so there is nothing to draw")
    else:
        data["pictures"]["notes"].append("pictures not drawn (pictures=False)")
    return report


def _statement(result) -> str:
    if not result.screened:
        return ("No result: none of the recordings could be screened (see the rejected recordings); "
                "record again.")
    word = "POSITIVE" if result.decision else "NEGATIVE"
    meaning = ("the recordings sound like those of the asthma patients the model learned from: refer for "
               "assessment (e.g. spirometry)" if result.decision else
               "the recordings do not sound like those of the asthma patients the model learned from; this "
               "does not rule asthma out")
    return f"Screen {word}: {meaning}."


def _draw_pictures(report: Report, result, deciding, classifier) -> None:
    """The deciding recording's three-window spectrogram and explanation map, named by its id only."""
    import steth_hub
    from steth_hub.audio import decode

    notes = report.data["pictures"]["notes"]
    path = result.paths.get(deciding.id)
    label = f"{deciding.id}" + (f" ({deciding.site})" if deciding.site else "")
    try:
        recording = decode(path)
        recording = replace(recording, source=label)  # the picture names R<n>, never the file
    except (StethError, TypeError, ValueError) as exc:
        notes.append(f"the deciding recording could not be read again: {getattr(exc, 'message', exc)}")
        return
    try:
        from steth_hub.display import spectrogram_image

        report.spectrogram_png = _png(spectrogram_image(recording))
        report.data["pictures"]["spectrogram"] = True
    except ImportError as exc:
        notes.append(f"spectrogram not drawn: {exc.name or exc} is not installed (pip install 'steth-hub[explain]')")
    except Exception as exc:  # noqa: BLE001 - the report stands without its picture; the page says why
        notes.append(f"spectrogram not drawn: {type(exc).__name__}: {exc}")
    try:
        explanation = steth_hub.explain(recording, model=classifier)
        report.explanation_png = explanation.png_bytes(dpi=100)
        report.data["pictures"]["explanation"] = True
        report.data["pictures"]["explainer"] = getattr(explanation, "explainer", None)
    except ImportError as exc:
        notes.append(f"explanation map not drawn: {exc.name or exc} is not installed "
                     "(pip install 'steth-hub[explain]')")
    except StethError as exc:
        notes.append(f"explanation map not drawn: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - the report stands without its picture; the page says why
        notes.append(f"explanation map not drawn: {type(exc).__name__}: {exc}")


def _png(rgb) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- HTML and PDF
def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(entry: Mapping | None, digits: int = 2) -> str:
    if not entry:
        return "n/a"
    text = f"{entry['value']:.{digits}f}"
    if entry.get("low") is not None and entry.get("high") is not None:
        text += f" [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"
    return text


def _data_uri(png: bytes | None) -> str | None:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii") if png else None


def render_html(report: Report, *, for_pdf: bool = False) -> str:
    """The page as a self-contained HTML document (pictures inlined as data URIs)."""
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - jinja2 comes with the train extra
        raise ConfigError("rendering a report needs jinja2", fix=_INSTALL) from exc
    env = jinja2.Environment(loader=jinja2.PackageLoader("steth_hub", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    env.filters["ci"] = _ci
    from steth_hub.stability import short_warning

    env.filters["short"] = lambda warnings: [short_warning(w) for w in warnings]  # the JSON and FHIR keep them whole
    return env.get_template(TEMPLATE).render(
        r=report.data, for_pdf=for_pdf, spectrogram=_data_uri(report.spectrogram_png),
        explanation=_data_uri(report.explanation_png))


def render_pdf(report: Report) -> bytes:
    """The page as PDF bytes (xhtml2pdf renders the HTML; A4, one page for a typical patient)."""
    try:
        from xhtml2pdf import pisa
    except ImportError as exc:
        raise ConfigError("rendering a PDF report needs xhtml2pdf", fix=_INSTALL) from exc
    import logging

    html = render_html(report, for_pdf=True)
    out = io.BytesIO()
    logging.getLogger("xhtml2pdf").setLevel(logging.ERROR)
    status = pisa.CreatePDF(html, dest=out, encoding="utf-8")
    if status.err:
        raise ConfigError(f"the PDF renderer reported {status.err} error(s)",
                          fix="report this with the command that produced it")
    return out.getvalue()


def report_json(report: Report) -> dict:
    """The report as plain JSON (the pictures are left out; the PDF and HTML carry them)."""
    return report.to_dict()


# --------------------------------------------------------------------------- FHIR R4
def _uuid(*parts: Any) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "steth-hub:" + "|".join(str(p) for p in parts)))


def _interpretation(decision: bool | None) -> list[dict]:
    if decision is None:
        return []
    code, text = ("POS", "Positive") if decision else ("NEG", "Negative")
    return [{"coding": [{"system": INTERPRETATION_SYSTEM, "code": code, "display": text}],
             "text": f"screen {text.lower()} at the model's threshold"}]


def _probability(value: float) -> dict:
    return {"value": round(float(value), 6), "unit": "probability", "system": "http://unitsofmeasure.org",
            "code": "1"}


def to_fhir(report: Report, *, validate: bool = True) -> dict:
    """The report as a FHIR R4 ``Bundle`` (type ``collection``): a ``DiagnosticReport`` (status
    ``preliminary``: a clinician must confirm it) whose results are one ``Observation`` per screened
    recording, one per rejected recording (``dataAbsentReason``) and the patient-level
    ``Observation``; the ``Patient`` (identifier and sex; the age as an Observation) and the model
    as a ``Device``. Identifiers are deterministic UUIDs, so the same report gives the same bundle.

    With ``validate`` (default) the bundle is parsed with ``fhir.resources.R4B``; a failure is a
    :class:`ConfigError`.
    """
    d = report.data
    pid = str(d["patient"]["patient_id"])
    seed = (pid, d["model"]["fingerprint"], d["created"])
    url = {name: f"urn:uuid:{_uuid(*seed, name)}" for name in
           ["report", "patient", "device", "result", "age",
            *(r["id"] for r in d["recordings"]), *(r["id"] for r in d["rejected"])]}
    patient_ref = {"reference": url["patient"], "display": f"patient {pid}"}
    device_ref = {"reference": url["device"], "display": d["model"]["name"]}
    issued = d["created"]
    category = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                             "code": "exam", "display": "Exam"}]}]
    resources: list[dict] = []

    patient = {"resourceType": "Patient", "id": _uuid(*seed, "patient"),
               "identifier": [{"system": f"{CODE_SYSTEM}/patient-id", "value": pid}]}
    if d["patient"].get("sex") in ("F", "M"):
        patient["gender"] = {"F": "female", "M": "male"}[d["patient"]["sex"]]
    device = {"resourceType": "Device", "id": _uuid(*seed, "device"),
              "deviceName": [{"name": d["model"]["name"], "type": "model-name"}],
              "version": [{"value": f"{d['model']['version']} (fingerprint {d['model']['fingerprint']})"}],
              "note": [{"text": f"classifier {d['model']['classifier']}, threshold {d['model']['threshold']:.3f}; "
                                f"{d['intended_use']}"}]}
    observations: list[tuple[str, dict]] = []
    for r in d["recordings"]:
        obs = {"resourceType": "Observation", "id": _uuid(*seed, r["id"]), "status": "preliminary",
               "category": category,
               "code": {"coding": [{"system": CODE_SYSTEM, "code": "recording-asthma-probability",
                                    "display": "P(asthma) of a lung-sound recording"}],
                        "text": f"P(asthma) of lung-sound recording {r['id']}"},
               "subject": patient_ref, "effectiveDateTime": issued, "issued": issued, "device": device_ref,
               "valueQuantity": _probability(r["probability"]),
               "interpretation": _interpretation(r["decision"]),
               "component": [{"code": {"text": "clips analysed"}, "valueInteger": int(r["n_clips"])}],
               "note": [{"text": f"quality warning: {w}"} for w in r["warnings"]]
               or [{"text": "quality: no warnings"}]}
        if r.get("site"):
            obs["bodySite"] = {"text": r["site"]}
        obs["method"] = {"text": f"electronic stethoscope{' (' + r['filter'] + ' filter)' if r.get('filter') else ''}; "
                                 f"audio sha256 {r['sha256'][:16]}"}
        observations.append((url[r["id"]], obs))
    for r in d["rejected"]:
        obs = {"resourceType": "Observation", "id": _uuid(*seed, r["id"]), "status": "preliminary",
               "category": category,
               "code": {"coding": [{"system": CODE_SYSTEM, "code": "recording-asthma-probability",
                                    "display": "P(asthma) of a lung-sound recording"}],
                        "text": f"P(asthma) of lung-sound recording {r['id']} (rejected)"},
               "subject": patient_ref, "issued": issued, "device": device_ref,
               "dataAbsentReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                                "code": "error", "display": "Error"}],
                                    "text": r["message"]},
               "note": [{"text": f"rejected ({r['code']}): {r['message']}" + (f"; fix: {r['fix']}" if r.get("fix")
                                                                                else "")}]}
        if r.get("site"):
            obs["bodySite"] = {"text": r["site"]}
        observations.append((url[r["id"]], obs))
    res = d["result"]
    patient_obs = {"resourceType": "Observation", "id": _uuid(*seed, "result"), "status": "preliminary",
                   "category": category,
                   "code": {"coding": [{"system": CODE_SYSTEM, "code": "patient-asthma-probability",
                                        "display": "Patient-level P(asthma) from lung-sound recordings"}],
                            "text": "Patient-level P(asthma) from lung-sound recordings"},
                   "subject": patient_ref, "effectiveDateTime": issued, "issued": issued, "device": device_ref,
                   "method": {"text": res["aggregation"]},
                   "derivedFrom": [{"reference": url[r["id"]]} for r in d["recordings"]],
                   "note": [{"text": res["statement"]}, {"text": d["disclaimer"]}]}
    if res["probability"] is None:
        patient_obs["dataAbsentReason"] = {"coding": [{"system":
                                                       "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                                       "code": "error", "display": "Error"}],
                                           "text": "no recording could be screened"}
    else:
        patient_obs["valueQuantity"] = _probability(res["probability"])
        patient_obs["interpretation"] = _interpretation(res["decision"])
        patient_obs["referenceRange"] = [{"high": _probability(res["threshold"]),
                                          "text": f"screen negative below the model's threshold "
                                                  f"{res['threshold']:.3f}"}]
    if not patient_obs["derivedFrom"]:
        del patient_obs["derivedFrom"]
    observations.append((url["result"], patient_obs))
    if d["patient"].get("age") is not None:
        observations.append((url["age"], {
            "resourceType": "Observation", "id": _uuid(*seed, "age"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "30525-0", "display": "Age"}], "text": "Age"},
            "subject": patient_ref, "valueQuantity": {"value": float(d["patient"]["age"]), "unit": "a",
                                                      "system": "http://unitsofmeasure.org", "code": "a"}}))

    perf = d["performance"]
    if perf.get("available"):
        pooled = perf["pooled"]
        perf_text = (f"Validated ({perf['method']}, {perf['interval']}): patient-level AUROC {_ci(pooled['auroc'])}, "
                     f"sensitivity {_ci(pooled['sensitivity'])}, specificity {_ci(pooled['specificity'])}"
                     + "".join(f"; within {w['source']}: AUROC {_ci(w['auroc'])}, sensitivity "
                               f"{_ci(w['sensitivity'])}, specificity {_ci(w['specificity'])}"
                               for w in perf["within_source"]) + ".")
    else:
        perf_text = perf.get("note") or "accuracy unknown"
    conclusion = f"{res['statement']} {perf_text} {d['disclaimer']}"
    diagnostic = {
        "resourceType": "DiagnosticReport", "id": _uuid(*seed, "report"), "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "OTH",
                                  "display": "Other"}], "text": "machine-learning screening of lung sounds"}],
        "code": {"coding": [{"system": CODE_SYSTEM, "code": "asthma-screening",
                             "display": "Asthma screening from lung-sound recordings"}],
                 "text": "Asthma screening from lung-sound recordings (screening support, not a diagnosis)"},
        "subject": patient_ref, "effectiveDateTime": issued, "issued": issued,
        "result": [{"reference": u, "display": o["code"]["text"]} for u, o in observations
                   if o["code"]["text"] != "Age"] + [{"reference": url["age"], "display": "Age"}
                                                    for u, o in observations if o["code"]["text"] == "Age"],
        "conclusion": conclusion,
    }
    if res["decision"] is not None:
        diagnostic["conclusionCode"] = _interpretation(res["decision"])
    entries = [(url["report"], diagnostic), (url["patient"], patient), (url["device"], device), *observations]
    bundle = {"resourceType": "Bundle", "id": _uuid(*seed, "bundle"), "type": "collection", "timestamp": issued,
              "identifier": {"system": f"{CODE_SYSTEM}/report", "value": _uuid(*seed, "bundle")},
              "entry": [{"fullUrl": u, "resource": r} for u, r in entries]}
    if validate:
        validate_fhir(bundle)
    return bundle


def validate_fhir(bundle: Mapping) -> None:
    """Parse a bundle with ``fhir.resources.R4B`` (every resource in it); errors become :class:`ConfigError`."""
    try:
        from fhir.resources.R4B.bundle import Bundle
    except ImportError as exc:
        raise ConfigError("validating FHIR needs fhir.resources", fix=_INSTALL) from exc
    try:
        Bundle.model_validate(dict(bundle))
    except Exception as exc:  # pydantic's ValidationError, or a resource type it does not know
        first = str(exc).splitlines()[:3]
        raise ConfigError(f"the FHIR bundle does not validate: {' '.join(first)}",
                          fix="report this with the command that produced it") from exc


# --------------------------------------------------------------------------- files
def report_format(path: str | os.PathLike) -> str:
    """``"pdf"``, ``"html"``, ``"json"`` or ``"fhir"`` from a file name; others are a ConfigError."""
    name = Path(path).name.lower()
    for suffix in FORMATS:
        if name.endswith(suffix):
            return {".fhir.json": "fhir", ".json": "json", ".html": "html", ".htm": "html", ".pdf": "pdf"}[suffix]
    raise ConfigError(f"cannot tell the report format from {Path(path).name!r}", path=path,
                      fix="name the output report.pdf, report.html, report.json or report.fhir.json")


def write_report(report: Report, path: str | os.PathLike) -> Path:
    """Write the report in the form its name says, atomically."""
    from steth_hub.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

    kind = report_format(path)
    if kind == "pdf":
        return atomic_write_bytes(path, render_pdf(report))
    if kind == "html":
        return atomic_write_text(path, render_html(report))
    if kind == "fhir":
        return atomic_write_json(path, to_fhir(report))
    return atomic_write_json(path, report_json(report))
