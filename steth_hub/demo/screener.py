"""One request of the recording tab: decode within the limits, screen once, draw, explain when asked,
and the texts the page shows (or the message that replaces them)."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steth_hub.demo.catalog import ModelCatalog
from steth_hub.demo.pictures import png_to_array, spectrogram_image
from steth_hub.demo.settings import DISCLAIMER, EXAMPLES_DIR, DemoSettings, _mib
from steth_hub.errors import AudioError, StethError

if TYPE_CHECKING:  # pragma: no cover
    from steth_hub.audio import Recording
    from steth_hub.classifier import Classifier

log = logging.getLogger(__name__)


@dataclass
class PatientFacts:
    """What a visitor may tell about the patient: shown back, saved, never a model input."""

    sex: str | None = None
    age: float | None = None
    site: str | None = None

    @classmethod
    def from_inputs(cls, sex: Any, age: Any, site: Any) -> "PatientFacts":
        sex = str(sex).strip().upper()[:1] if sex else None
        try:
            age_value = float(age) if age not in (None, "") else None
        except (TypeError, ValueError):
            age_value = None
        if age_value is not None and not 0 <= age_value <= 130:  # also drops NaN and infinities
            age_value = None
        site_text = " ".join(str(site).split())[:40] if site else None
        return cls(sex=sex if sex in ("F", "M") else None, age=age_value, site=site_text or None)

    def to_dict(self) -> dict:
        return {"sex": self.sex, "age": self.age, "site": self.site, "model_input": False}

    def describe(self) -> str:
        parts = [{"F": "female", "M": "male"}.get(self.sex or "", ""),
                 f"{self.age:g} years" if self.age is not None else "", self.site or ""]
        return ", ".join(p for p in parts if p) or "not given"


@dataclass
class Analysis:
    """Everything the page shows for one request (or the message that replaces it)."""

    summary: str
    warnings: str = ""
    spectrogram: Any = None  # RGB uint8 array
    explanation: Any = None  # RGB uint8 array
    result: dict | None = None

    def outputs(self) -> tuple:
        return self.summary, self.warnings, self.spectrogram, self.explanation, self.result


class Screener:
    """Screens one uploaded recording with the chosen model and prepares what the page shows."""

    def __init__(self, catalog: ModelCatalog, settings: DemoSettings):
        self.catalog = catalog
        self.settings = settings

    def warm_up(self) -> float | None:
        """Screen a shipped example with the default model, once, so that the model and the
        libraries of the pipeline (about 6 s of loading on 2 CPU cores) are ready before the first
        visitor. Returns the seconds it took, or None when it could not (the reason is logged)."""
        import time

        example = next(iter(sorted(EXAMPLES_DIR.glob("*/*.wav"))), None)
        if example is None or self.catalog.default is None:
            return None
        start = time.perf_counter()
        try:
            self.analyse(str(example), self.catalog.default, PatientFacts())
        except Exception as exc:  # the page works without it: the first visitor just waits longer
            log.warning("demo: warming up with %s failed: %s", example.name, exc)
            return None
        return time.perf_counter() - start

    def __call__(self, audio_path: str | None, model_name: str | None, sex: Any = None, age: Any = None,
                 site: Any = None, explain: bool = False) -> tuple:
        patient = PatientFacts.from_inputs(sex, age, site)
        if not audio_path:
            return _message("No recording yet", "Record with the microphone or upload a file, then press "
                            "Screen recording.", code="no-audio").outputs()
        name = Path(audio_path).name
        try:
            return self.analyse(audio_path, model_name, patient, explain=bool(explain)).outputs()
        except StethError as exc:
            return _message(f"Could not screen {name}", exc.message, fix=exc.fix, code=exc.code,
                            file=name).outputs()
        except Exception as exc:  # a public page shows a message, the log keeps the trace
            log.exception("demo: screening %s failed", name)
            return _message(f"Could not screen {name}",
                            f"steth-hub failed unexpectedly ({type(exc).__name__}); the details are in the "
                            "server's log.", fix="try another recording, or report the problem with the file",
                            code="internal", file=name).outputs()

    def analyse(self, audio_path: str, model_name: str | None, patient: PatientFacts,
                explain: bool = False) -> Analysis:
        """Decode (within the limits), screen, draw, and with ``explain`` explain the screened clips;
        raises StethError for anything a user can fix."""
        from steth_hub.audio import decode
        from steth_hub.screening import screen

        path = Path(audio_path)
        name = path.name
        size = path.stat().st_size if path.is_file() else 0
        if size > self.settings.max_bytes:  # before decoding, whatever Gradio's own limit was
            raise AudioError(f"the file is {_mib(size)}, above this page's {_mib(self.settings.max_bytes)} limit",
                             path=name, code="too-large", fix="upload a shorter recording (or a compressed one)")
        try:
            recording = decode(path, max_seconds=self.settings.max_seconds, max_bytes=self.settings.max_bytes)
        except AudioError as exc:
            if exc.code == "too-long":
                exc.fix = f"upload at most {self.settings.max_seconds:g} s (cut the recording)"
            raise
        model = self.catalog.get(model_name)
        # one preprocessing and one forward pass; the result keeps its clips for the explanation
        result = screen(recording, model=model)  # decoding warnings travel with the recording
        record = _result_record(result, recording, name, model_name or self.catalog.default, model, patient,
                                self.settings)
        spectrogram, explanation = self._pictures(result, model_name, model, record, explain)
        return Analysis(summary=_summary(result, recording, name, record, patient),
                        warnings=_warnings_text(record["warnings"]),
                        spectrogram=spectrogram, explanation=explanation, result=record)

    def _pictures(self, result, model_name: str | None, model: "Classifier", record: dict, explain: bool):
        """The spectrogram and, when asked for and an explainer supports the model, the explanation map.

        Both are extras: when one cannot be drawn the result still stands, and the JSON says why.
        """
        notes = record.setdefault("notes", [])
        try:
            spectrogram = spectrogram_image(result.computed.recording)
        except Exception as exc:
            log.warning("demo: drawing the spectrogram of %s failed: %s", record["source"], exc)
            spectrogram = None
            notes.append(f"the spectrogram could not be drawn ({type(exc).__name__})")
        if not explain:  # the explainer (and torch) load only when a visitor asks for the map
            record["explanation"] = {"explainer": None, "note": "not asked for (tick \"Show where the model "
                                                                "looked\" to draw it)"}
            return spectrogram, None
        from steth_hub.explanation import explain_result, explainers_for

        plugin = getattr(model, "plugin_name", None)
        if not explainers_for(plugin):
            record["explanation"] = {"explainer": None,
                                     "note": f"no explainer is installed for the {plugin} classifier"}
            return spectrogram, None
        try:  # the default explainer of the model's plugin, on the clips screening computed
            explanation = explain_result(result, model=self.catalog.explainable(model_name))
        except Exception as exc:
            log.warning("demo: explaining %s failed: %s", record["source"], exc)
            record["explanation"] = {"explainer": None, "note": f"the explanation could not be drawn ({exc})"}
            return spectrogram, None
        record["explanation"] = {"explainer": explanation.explainer, "target": explanation.target,
                                 **explanation.summary()}
        return spectrogram, png_to_array(explanation.png_bytes())


def _result_record(result, recording: "Recording", name: str, model_name: str | None, model: "Classifier",
                   patient: PatientFacts, settings: DemoSettings) -> dict:
    """The JSON the page shows (and a user can copy): the screening result plus its context.

    ``source`` is the uploaded file's name, not the server's temporary path.
    """
    record = result.to_dict()
    record.update({
        "source": name,
        "selected_model": {"name": model_name, "plugin": getattr(model, "plugin_name", None)},
        "recording": {"file": name, "duration_s": round(recording.duration, 3),
                      "sample_rate": recording.original_sample_rate, "channels": recording.channels},
        "patient": patient.to_dict(),
        "limits": {"max_seconds": settings.max_seconds, "max_bytes": settings.max_bytes},
    })
    return record


def _decision_text(result) -> str:
    if bool(result.decision):
        return "**screen positive**: sounds like the asthma recordings the model learned from"
    return "**screen negative**: does not sound like the asthma recordings the model learned from"


def _esc(text: Any) -> str:
    """User-given or file-given text, safe inside Markdown (and a table cell): no HTML, no markup."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return "".join("\\" + c if c in "\\`*_[]|#<>!" else c for c in text)


def _summary(result, recording: "Recording", name: str, record: dict, patient: PatientFacts) -> str:
    from steth_hub.explanation import decision_numbers

    probability, threshold = float(result.probability), float(result.threshold)
    shown, shown_threshold = decision_numbers(probability, threshold)
    side = "at or above" if result.decision else "below"
    explained = record.get("explanation") or {}
    rows = [
        ("P(asthma)", shown),
        ("Decision", f"{_decision_text(result)} (P(asthma) {side} the model's threshold {shown_threshold})"),
        ("Clips analysed", str(result.n_clips)),
        ("Model", _esc(f"{record['selected_model']['name']} ({record['selected_model']['plugin']})")),
        ("Explanation map", f"below, drawn by the {_esc(explained['explainer'])} explainer"
         if explained.get("explainer") else _esc(f"not shown: {explained.get('note', 'not drawn')}")),
        ("Recording", _esc(f"{name}: {recording.duration:.1f} s at {recording.original_sample_rate} Hz")),
        ("Patient facts (not model inputs)", _esc(patient.describe())),
    ]
    items = "\n".join(f"- **{key}:** {value}" for key, value in rows)
    return (f"### Screening result: P(asthma) = {shown}, "
            f"{'positive' if result.decision else 'negative'}\n\n{items}\n\n{DISCLAIMER}")


def _warnings_text(warnings: list[str]) -> str:
    if not warnings:
        return "**Quality:** no warnings."
    return "**Quality warnings:**\n" + "\n".join(f"- {_esc(w)}" for w in warnings)


def _message(title: str, message: str, *, fix: str | None = None, code: str = "error",
             file: str | None = None) -> Analysis:
    text = f"### {_esc(title)}\n\n{_esc(message)}"
    if fix:
        text += f"\n\n**What to do:** {_esc(fix)}"
    error = {"code": code, "message": message, "fix": fix, "file": file}
    return Analysis(summary=text + f"\n\n{DISCLAIMER}", result={"error": error})
