"""One request of the recording tab: decode within the limits, screen once, draw, explain when asked,
and the texts the page shows (or the message that replaces them)."""

from __future__ import annotations

import contextlib
import html
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steth_hub.demo.catalog import ModelCatalog, reads_facts
from steth_hub.demo.pictures import png_to_array, spectrogram_image
from steth_hub.demo.settings import (DISCLAIMER, EXAMPLES_DIR, PATIENT_NOTE, PATIENT_NOTE_PROMPT, DemoSettings,
                                     _mib)
from steth_hub.errors import AudioError, StethError

if TYPE_CHECKING:  # pragma: no cover
    from steth_hub.audio import Recording
    from steth_hub.classifier import Classifier

log = logging.getLogger(__name__)

#: A model that reads the patient facts (a VLM) keeps the facts registered for a recording's clips, and the
#: ones its explainer's blended images get, on the one loaded model all visitors share: one such request at a
#: time registers, screens, writes and explains (other models never take this lock).
_PROMPT_LOCK = threading.RLock()
#: the prompt fields that carry patient facts, in words
_FACT_FIELDS = {"patient_sex": "sex", "patient_age": "age", "record_point": "recording site"}


def facts_note(in_prompt: bool) -> str:
    """The note above the patient facts: model inputs for a model that reads them, else not."""
    return PATIENT_NOTE_PROMPT if in_prompt else PATIENT_NOTE


def facts_label(in_prompt: bool) -> str:
    return "Patient facts (model inputs: written into its prompt)" if in_prompt else "Patient facts (not model inputs)"


def register_prompt_facts(model, recording, *, sex: Any = None, age: Any = None, site: Any = None) -> dict:
    """Register these facts for ``recording``'s clips before it is screened by a model that reads them.

    ``recording`` is a path or a decoded :class:`~steth_hub.audio.Recording` (no second decoding); only the
    facts given here go in (an empty site is "not given": the file name's site field is not read). Returns
    :func:`steth_builtin.vlm_screen.register_facts`' ``{"facts", "omitted", "prompt"}`` with ``in_prompt``
    (the facts the prompt carries, in words) and ``not_read`` (facts given that this model's prompt has no
    field for).
    """
    from steth_builtin.vlm_screen import register_facts

    entry = register_facts(model, recording, sex=sex, age=age, site=site if site else "")
    try:
        prompt = json.loads(entry["prompt"]) if entry.get("prompt") else {}
    except ValueError:
        prompt = {}
    entry["in_prompt"] = {_FACT_FIELDS[k]: v for k, v in prompt.items() if k in _FACT_FIELDS}
    given = {"sex": entry["facts"].get("sex"), "age": entry["facts"].get("age"),
             "recording site": entry["facts"].get("site")}
    entry["not_read"] = [k for k, v in given.items() if v is not None and k not in entry["in_prompt"]]
    return entry


def text_answer(model, waveforms) -> dict:
    """The answer the model writes for the clips it screened (no second preprocessing), as
    :func:`steth_builtin.vlm_screen.explain_text` gives it: the first clip's ``{"text", "label", "prompt",
    "omitted"}`` with ``texts_per_clip`` and ``labels_per_clip``."""
    answers = model.generate_text(waveforms)
    first = dict(answers[0])
    first["texts_per_clip"] = [a["text"] for a in answers]
    first["labels_per_clip"] = [a["label"] for a in answers]
    return first


def prompt_line(entry: dict) -> str:
    """What went into the prompt and what was left out, in words (plain text: escape it for the page)."""
    def shown(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    given = ", ".join(f"{k} {shown(v)}" for k, v in entry.get("in_prompt", {}).items())
    line = given or "no patient facts"
    left = [_FACT_FIELDS.get(k, k) for k in entry.get("omitted", [])]
    if left:
        line += f"; left out (not given): {', '.join(left)}"
    if entry.get("not_read"):
        line += f"; given but not read by this model: {', '.join(entry['not_read'])}"
    return line


def answer_line(answer: dict) -> str:
    """The model's own words (plain text): every clip's answer (:func:`text_answer`), or the first clip's with
    the labels read from every clip (:func:`steth_builtin.vlm_screen.explain_text`)."""
    def quoted(text: Any) -> str:
        return '"' + " ".join(str(text).split()) + '"'

    texts = answer.get("texts_per_clip")
    if texts:
        said = " / ".join(quoted(t) for t in texts) + " (one answer per clip"
    else:
        labels = ", ".join(str(x or "no label") for x in answer.get("labels_per_clip") or [])
        said = quoted(answer.get("text")) + " (its answer for the first clip" + (
            f"; labels read from every clip: {labels}" if labels else "")
    return said + "; P(asthma) comes from its scores of the two answers, not from this text)"


@dataclass
class PatientFacts:
    """What a visitor may tell about the patient: shown back and saved; a model input only for a model that
    reads them in its prompt (a VLM)."""

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

    def to_dict(self, model_input: bool = False) -> dict:
        return {"sex": self.sex, "age": self.age, "site": self.site, "model_input": bool(model_input)}

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
        in_prompt = reads_facts(model)
        with _PROMPT_LOCK if in_prompt else contextlib.nullcontext():
            prompt = None
            if in_prompt:  # a VLM: the page's facts go into this recording's prompt (its clips cut once more)
                prompt = register_prompt_facts(model, recording, sex=patient.sex, age=patient.age, site=patient.site)
            # one preprocessing and one forward pass; the result keeps its clips for the explanation
            result = screen(recording, model=model)  # decoding warnings travel with the recording
            record = _result_record(result, recording, name, model_name or self.catalog.default, model, patient,
                                    self.settings, prompt=prompt)
            if prompt is not None:
                self._answer(model, result, record)
            spectrogram, explanation = self._pictures(result, model_name, model, record, explain, patient=patient)
        return Analysis(summary=_summary(result, recording, name, record, patient),
                        warnings=_warnings_text(record["warnings"]),
                        spectrogram=spectrogram, explanation=explanation, result=record)

    @staticmethod
    def _answer(model, result, record: dict) -> None:
        """The VLM's own words for the clips it screened; an extra: the result stands without it."""
        try:
            record["vlm"]["answer"] = text_answer(model, result.computed.waveforms)
        except Exception as exc:
            log.warning("demo: the model's text for %s failed: %s", record["source"], exc)
            record["vlm"]["answer"] = None
            record.setdefault("notes", []).append(f"the model's text could not be written ({type(exc).__name__})")

    def _pictures(self, result, model_name: str | None, model: "Classifier", record: dict, explain: bool,
                  patient: PatientFacts | None = None):
        """The spectrogram and, when asked for and an explainer supports the model, the explanation map.

        Both are extras: when one cannot be drawn the result still stands, and the JSON says why. A model
        that reads the patient facts gets them for the explainer's own images too.
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
            heavy = self.catalog.explainable(model_name)
            facts = getattr(heavy, "patient_facts", None) if record.get("vlm") else None
            with facts(sex=patient.sex, age=patient.age, site=patient.site) if facts and patient \
                    else contextlib.nullcontext():
                explanation = explain_result(result, model=heavy)
        except Exception as exc:
            log.warning("demo: explaining %s failed: %s", record["source"], exc)
            record["explanation"] = {"explainer": None, "note": f"the explanation could not be drawn ({exc})"}
            return spectrogram, None
        record["explanation"] = {"explainer": explanation.explainer, "target": explanation.target,
                                 **explanation.summary()}
        return spectrogram, png_to_array(explanation.png_bytes())


def _result_record(result, recording: "Recording", name: str, model_name: str | None, model: "Classifier",
                   patient: PatientFacts, settings: DemoSettings, prompt: dict | None = None) -> dict:
    """The JSON the page shows (and a user can copy): the screening result plus its context.

    ``source`` is the uploaded file's name, not the server's temporary path. For a model that reads the
    patient facts, ``vlm`` holds its prompt, the facts it carried and the ones left out (as ``steth screen
    --json`` has them), and later the model's text.
    """
    record = result.to_dict()
    record.update({
        "source": name,
        "selected_model": {"name": model_name, "plugin": getattr(model, "plugin_name", None)},
        "recording": {"file": name, "duration_s": round(recording.duration, 3),
                      "sample_rate": recording.original_sample_rate, "channels": recording.channels},
        "patient": patient.to_dict(model_input=prompt is not None),
        "limits": {"max_seconds": settings.max_seconds, "max_bytes": settings.max_bytes},
    })
    if prompt is not None:
        record["vlm"] = prompt
    return record


def _decision_text(result) -> str:
    caution = ("; **unstable**: a harmless change of the recording moves it across the threshold, so read it "
               "as indeterminate" if getattr(result, "stable", None) is False else "")
    if bool(result.decision):
        return "**screen positive**: sounds like the asthma recordings the model learned from" + caution
    return "**screen negative**: does not sound like the asthma recordings the model learned from" + caution


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
        (facts_label("vlm" in record), _esc(patient.describe())),
    ]
    if "vlm" in record:
        rows.append(("In the model's prompt", _esc(prompt_line(record["vlm"]))))
        answer = record["vlm"].get("answer")
        if answer:
            rows.append(("The model writes", _esc(answer_line(answer))))
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
