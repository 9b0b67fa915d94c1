"""The Gradio demo: record or upload a breath sound and get a screening result one can understand.

:func:`build_app` builds the page (a ``gr.Blocks``) and :func:`launch` serves it; ``steth demo``
and the Hugging Face Space in ``spaces/app.py`` both call them, so the local page and the public
one are the same app.

What a visitor gets for one recording: P(asthma), the decision at the model's own threshold,
the number of clips analysed, quality warnings, the three-window log-mel spectrogram (25, 100
and 175 ms windows, stacked, axes in seconds and hertz), on request ("Show where the model
looked") the explanation map when an explainer for the chosen model is installed, and the
statement that this is screening support, not a diagnosis. Optional patient facts (sex, age,
recording site) are shown back and kept in the JSON result; the audio classifiers never see them.

Screening runs on the light runtime: a model with an ONNX export is screened by ONNX Runtime
(:mod:`steth_hub.runtime`) and the spectrogram is drawn with numpy (:mod:`steth_hub.display`),
so a request that does not ask for the map never imports torch. Asking for it loads the torch
form of the model and the explainer then (the first time), and the map explains the clips and
P(asthma) the screening computed (:func:`steth_hub.explanation.explain_result`): one decoding,
one preprocessing and one forward pass per request, whatever is shown.

The page is meant to face the public, so:

* an upload above ``max_bytes`` is refused before it is decoded (Gradio's own upload limit is
  set to the same size, and the handler checks again), and one longer than ``max_seconds`` is
  refused from its header, before its samples are read;
* a corrupt, empty, silent or too-short recording, an unavailable model or an unexpected
  failure gives a message in the result box, never a stack trace;
* requests are queued (``concurrency`` at a time, ``queue_size`` waiting);
* the only files the app reads are the ones Gradio received as uploads and the example
  recordings shipped in ``steth_hub/examples`` (Gradio copies them into its cache when the page
  is built); ``allowed_paths`` is empty, so no other file on the server can be fetched or passed
  to the screening endpoint, and uploads are deleted after ``keep_uploads_s``;
* Gradio's analytics are off (``GRADIO_ANALYTICS_ENABLED=False`` before gradio is imported).

The pieces it shows come from the rest of steth-hub and are looked up when used:
:func:`steth_hub.screening.load_model` (models), :func:`steth_hub.screening.screen` (the result),
:func:`steth_hub.display.log_mel` (the spectrogram), :func:`steth_hub.explanation.explain_result`
(the map) and the plugin registry (installed classifiers and explainers). Importing this
module imports none of gradio, torch or matplotlib.
"""

from __future__ import annotations

import html
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

# Gradio reads this when it is imported: no analytics and no version check from the page or server.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from steth_hub.errors import AudioError, ConfigError, ModelError, StethError  # noqa: E402
from steth_hub.hub import DEFAULT_MODEL  # noqa: E402  (the embedded model, offered first)

if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr
    import numpy as np

    from steth_hub.audio import Recording
    from steth_hub.classifier import Classifier

log = logging.getLogger(__name__)

#: longest recording accepted, in seconds (checked from the file's header)
DEFAULT_MAX_SECONDS = 60.0
#: largest upload accepted, in bytes (checked before decoding)
DEFAULT_MAX_BYTES = 20 * 2**20
#: requests screened at the same time (the models run on the CPU)
DEFAULT_CONCURRENCY = 1
#: requests that may wait in the queue; more are turned away with a "queue full" message
DEFAULT_QUEUE_SIZE = 32
#: uploaded recordings are deleted this long after they arrive (seconds)
DEFAULT_KEEP_UPLOADS_S = 3600
#: the example recordings shipped with the package (offered with one click)
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

TITLE = "steth-hub: asthma screening support from breath sounds"
DISCLAIMER = ("**Screening support, not a diagnosis.** The result says whether the recording sounds like "
              "the asthma recordings the model learned from. Only a clinician can diagnose asthma; "
              "do not start, change or stop any treatment because of this page.")
EXPLAIN_LABEL = "Show where the model looked (the explanation map: slower, loads the explainer)"
PATIENT_NOTE = ("Optional. Shown with the result and saved in the JSON; **not** used by the model, "
                "which hears only the audio.")


@dataclass(frozen=True)
class DemoSettings:
    """The limits the page enforces (see :func:`build_app`)."""

    max_seconds: float = DEFAULT_MAX_SECONDS
    max_bytes: int = DEFAULT_MAX_BYTES
    concurrency: int = DEFAULT_CONCURRENCY
    queue_size: int = DEFAULT_QUEUE_SIZE
    keep_uploads_s: int = DEFAULT_KEEP_UPLOADS_S

    def __post_init__(self) -> None:
        if not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be positive, got {self.max_seconds}", fix="pass e.g. --max-seconds 60")
        if not self.max_bytes > 0:
            raise ConfigError(f"max_bytes must be positive, got {self.max_bytes}", fix="pass e.g. --max-mb 20")
        if self.concurrency < 1 or self.queue_size < 1:
            raise ConfigError("concurrency and queue_size must be at least 1", fix="pass positive numbers")

    def describe(self) -> str:
        return f"Recordings up to {_mib(self.max_bytes)} and {self.max_seconds:g} s (WAV, FLAC, OGG or MP3)."


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.3g} MiB"


#: environment variables read by :func:`settings_from_env` (a Space sets them as its variables)
ENV_PREFIX = "STETH_DEMO_"


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict:
    """:func:`build_app` keyword arguments from ``STETH_DEMO_*`` variables, for a Space's settings.

    ``STETH_DEMO_MODELS`` (comma-separated Hub names or folders; default the embedded model),
    ``STETH_DEMO_MAX_SECONDS``, ``STETH_DEMO_MAX_MB``, ``STETH_DEMO_CONCURRENCY``,
    ``STETH_DEMO_QUEUE_SIZE``. A value that is not a number is a :class:`~steth_hub.errors.ConfigError`
    naming the variable.
    """
    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {}
    models = [m.strip() for m in env.get(f"{ENV_PREFIX}MODELS", "").split(",") if m.strip()]
    if models:
        kwargs["models"] = models
    numbers = {"MAX_SECONDS": ("max_seconds", float, 1.0), "MAX_MB": ("max_bytes", float, 2.0**20),
               "CONCURRENCY": ("concurrency", int, 1), "QUEUE_SIZE": ("queue_size", int, 1)}
    for suffix, (key, kind, scale) in numbers.items():
        raw = env.get(ENV_PREFIX + suffix, "").strip()
        if not raw:
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{suffix}={raw!r} is not a number",
                              fix=f"set {ENV_PREFIX}{suffix} to a {'whole ' if kind is int else ''}number") from None
        kwargs[key] = int(value * scale) if key == "max_bytes" else value
    return kwargs


# --------------------------------------------------------------------------- models
@dataclass
class ModelEntry:
    """One model the page offers: its name in the selector, its plugin and where it comes from."""

    name: str
    source: Any  # a Hub name, a folder, or a loaded Classifier
    plugin: str | None = None
    note: str = ""
    error: StethError | None = None

    @property
    def label(self) -> str:
        if self.error is not None:
            return f"{self.name} (unavailable)"
        detail = ", ".join(x for x in (self.plugin, self.note) if x)
        return f"{self.name} ({detail})" if detail else self.name


class ModelCatalog:
    """The models the selector lists, each loaded once (on first use) and then kept.

    ``models`` holds Hub names (``"steth/ast-asthma"``), model folders, or already loaded
    :class:`~steth_hub.classifier.Classifier` objects. A model that cannot be found stays in
    the list as unavailable, so the page still starts and says why when it is chosen.
    """

    def __init__(self, models: Sequence[Any] | Mapping[str, Any] | None = None):
        items: list[tuple[str | None, Any]]
        if models is None:
            items = [(None, DEFAULT_MODEL)]
        elif isinstance(models, Mapping):
            items = list(models.items())
        elif isinstance(models, (str, os.PathLike)):
            items = [(None, models)]
        else:
            items = [(None, m) for m in models]
        self.entries: dict[str, ModelEntry] = {}
        self._loaded: dict[str, Classifier] = {}
        self._explainable: dict[str, Classifier] = {}
        self._lock = threading.Lock()
        for name, source in items:
            entry = self._describe(name, source)
            base, n = entry.name, 2
            while entry.name in self.entries:
                entry.name, n = f"{base} #{n}", n + 1
            self.entries[entry.name] = entry

    @staticmethod
    def _describe(name: str | None, source: Any) -> ModelEntry:
        from steth_hub.classifier import Classifier

        if isinstance(source, Classifier):
            return ModelEntry(name or source.plugin_name, source, plugin=source.plugin_name, note="in memory")
        text = os.fspath(source)
        is_folder = Path(text).expanduser().is_dir()
        # a folder is shown by its own name: the page does not reveal the server's paths
        entry = ModelEntry(name or (Path(text).expanduser().resolve().name if is_folder else text), source)
        if text == DEFAULT_MODEL:
            entry.note = "embedded default"
        try:
            entry.plugin = _plugin_of(source)
        except StethError as exc:
            entry.error = exc
            log.warning("model %s is not available: %s", text, exc)
        return entry

    @property
    def default(self) -> str | None:
        """The first model that is available (else the first listed)."""
        for name, entry in self.entries.items():
            if entry.error is None:
                return name
        return next(iter(self.entries), None)

    def choices(self) -> list[tuple[str, str]]:
        """``(label, name)`` pairs for a dropdown."""
        return [(entry.label, name) for name, entry in self.entries.items()]

    def get(self, name: str | None) -> "Classifier":
        """The loaded model called ``name`` (loading it the first time); errors say what to do."""
        name = name or self.default
        entry = self.entries.get(name or "")
        if entry is None:
            raise ModelError(f"no model named {name!r} on this page",
                             fix=f"choose one of: {', '.join(self.entries) or 'none'}")
        if entry.error is not None:
            raise ModelError(f"model {name!r} is not available: {entry.error.message}", fix=entry.error.fix)
        with self._lock:  # two visitors asking at once load it once
            if name not in self._loaded:
                from steth_hub.screening import load_model

                try:
                    self._loaded[name] = load_model(entry.source)
                except StethError as exc:
                    raise ModelError(f"model {name!r} cannot be loaded: {exc.message}", fix=exc.fix) from exc
            return self._loaded[name]

    def explainable(self, name: str | None) -> "Classifier":
        """The torch form of model ``name``, which explainers need (loaded the first time it is asked for:
        this is what imports torch). A model screened by the light runtime is reloaded from its folder."""
        name = name or self.default
        model = self.get(name)
        with self._lock:
            if name not in self._explainable:
                import importlib.util

                from steth_hub.screening import load_model

                if importlib.util.find_spec("torch") is None:
                    raise ModelError("the explanation map needs torch, which is not installed here",
                                     fix="pip install 'steth-hub[explain]' (screening works without it)")
                self._explainable[name] = load_model(model, runtime="torch")
            return self._explainable[name]


def _plugin_of(source: str | os.PathLike) -> str:
    """The classifier plugin a model folder or name needs, read from ``steth.json`` without loading it."""
    from steth_hub.classifier import STETH_METADATA, read_metadata
    from steth_hub.hub import AST_PLUGIN, resolve

    folder = resolve(source)
    if (folder / STETH_METADATA).is_file():
        return str(read_metadata(folder)["plugin"])
    return AST_PLUGIN  # a plain transformers AST checkpoint is adopted by the ast plugin


def installed_plugins(kind: str) -> list[str]:
    """Names of the installed plugins of ``kind`` (``"classifier"``, ``"explainer"``)."""
    from steth_hub.registry import get_registry

    return get_registry().names(kind)


# --------------------------------------------------------------------------- one request
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


# --------------------------------------------------------------------------- pictures
#: the spectrogram's windows (ms) and band (Hz): MultiWindowLogMel's, the three windows the models use
SPECTROGRAM_WINDOWS_MS = (25.0, 100.0, 175.0)
SPECTROGRAM_BAND_HZ = (0.0, 8000.0)


def spectrogram_image(recording: "Recording") -> "np.ndarray":
    """The three-window log-mel of the whole recording: 3 stacked panels, time in s, frequency in Hz.

    Computed in numpy (:func:`steth_hub.display.log_mel`, the numbers of
    :class:`~steth_hub.features.MultiWindowLogMel`): drawing it imports no torch.
    """
    from steth_hub.display import log_mel

    f_min, f_max = SPECTROGRAM_BAND_HZ
    mel = log_mel(recording.samples, recording.sample_rate, windows_ms=SPECTROGRAM_WINDOWS_MS, f_min=f_min,
                  f_max=f_max)  # resampled to 16 kHz, 128 mel bands, 10 ms hop
    return _draw_panels(mel, [f"{w:g} ms window" for w in SPECTROGRAM_WINDOWS_MS], recording.duration,
                        f_min, f_max, colorbar="dB", title="Log-mel spectrogram (the three windows the models use)")


def _draw_panels(images: "np.ndarray", titles: list[str], duration: float, f_min: float, f_max: float, *,
                 colorbar: str, title: str) -> "np.ndarray":
    """Stacked mel-frequency panels as an RGB array; the y axis is labelled in Hz on the mel scale."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from steth_hub.display import hz_to_mel  # the Slaney scale the features' filterbank uses

    n_mels = images.shape[-2]
    ticks_hz = [f for f in (0, 250, 500, 1000, 2000, 4000, 8000, 16000) if f_min <= f <= f_max]
    mel_lo, mel_hi, *mels = hz_to_mel(np.asarray([f_min, f_max, *ticks_hz], dtype=np.float64)).tolist()
    ticks = [(m - mel_lo) / (mel_hi - mel_lo) * n_mels for m in mels]
    fig = Figure(figsize=(8, 2.0 * len(images) + 0.7), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(images), 1, sharex=True, squeeze=False)[:, 0]
    for ax, image, panel in zip(axes, images, titles):
        shown = ax.imshow(image, origin="lower", aspect="auto", cmap="magma",
                          extent=(0.0, duration, 0.0, float(n_mels)))
        ax.set_yticks(ticks, [f"{f:g}" for f in ticks_hz])
        ax.set_ylabel("Hz")
        ax.set_title(panel, fontsize=9, loc="left")
        fig.colorbar(shown, ax=ax, label=colorbar, pad=0.01)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=11)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def png_to_array(png: bytes) -> "np.ndarray":
    """PNG bytes as an RGB uint8 array (what ``gr.Image(type="numpy")`` shows)."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB")).copy()


# --------------------------------------------------------------------------- examples
def example_rows() -> list[tuple[str, str, str, float | None, str]]:
    """``(label, path, sex, age, site)`` for each example recording shipped with the package.

    The label names the source and the known diagnosis so a visitor can compare; sex, age and
    site come from the file name (KAUH) and fill the patient facts.
    """
    from steth_hub.corpus.diagnosis import normalise_diagnosis
    from steth_hub.corpus.icbhi import parse_icbhi_name, read_diagnoses
    from steth_hub.corpus.kauh import parse_kauh_name

    rows = []
    for path in sorted(EXAMPLES_DIR.glob("*/*.wav")):
        sex, age, site, diagnosis = "", None, "", None
        try:  # the corpus importers' own name parsers
            if path.parent.name == "kauh":
                meta = parse_kauh_name(path.name)
                sex, age, site = meta["sex"] or "", meta["age"], meta["site"] or ""
                diagnosis = normalise_diagnosis(meta["diagnosis"])
            elif path.parent.name == "icbhi":
                meta = parse_icbhi_name(path.name)
                site = meta["site"] or ""
                known = read_diagnoses(path.parent / "patient_diagnosis.csv").get(meta["patient"])
                diagnosis = normalise_diagnosis(known) if known else None
        except (ValueError, StethError) as exc:  # an odd name still gives an example, without facts
            log.debug("example %s: %s", path.name, exc)
        facts = PatientFacts(sex=sex or None, age=age, site=site or None).describe()
        label = f"{path.parent.name.upper()}: {diagnosis or 'diagnosis unknown'} ({facts})"
        rows.append((label, str(path), sex, age, site))
    return rows


# --------------------------------------------------------------------------- patient mode
#: most recordings one patient request may carry
DEFAULT_MAX_PATIENT_FILES = 12
PATIENT_MODE_NOTE = ("Upload all the recordings of **one** patient (e.g. several chest sites, or one site through the "
                     "stethoscope's bell, diaphragm and extended filters). They are screened one by one and "
                     "combined by the model's own rule (the mean of the recordings' P(asthma), as its evaluation "
                     "scored patients). Recordings are named R1, R2... in upload order; file names are never shown.")


class PatientScreener:
    """Screens several uploaded recordings of one patient and writes the report (PDF and FHIR JSON)."""

    def __init__(self, catalog: ModelCatalog, settings: DemoSettings, max_files: int = DEFAULT_MAX_PATIENT_FILES):
        import tempfile

        self.catalog = catalog
        self.settings = settings
        self.max_files = int(max_files)
        self.out_dir = Path(tempfile.mkdtemp(prefix="steth-demo-reports-"))

    def check(self, path: str) -> None:
        """The page's limits, before a recording is read: size, then length from the header."""
        from steth_hub.audio import decode

        size = Path(path).stat().st_size if Path(path).is_file() else 0
        if size > self.settings.max_bytes:
            raise AudioError(f"the file is {_mib(size)}, above this page's {_mib(self.settings.max_bytes)} limit",
                             code="too-large", fix="upload a shorter recording (or a compressed one)")
        try:
            decode(path, max_seconds=self.settings.max_seconds, max_bytes=self.settings.max_bytes)
        except AudioError as exc:
            if exc.code == "too-long":
                exc.fix = f"upload at most {self.settings.max_seconds:g} s (cut the recording)"
            raise

    def __call__(self, files: Any, sites: Any = "", patient_id: Any = "", sex: Any = "", age: Any = None,
                 model_name: str | None = None) -> tuple:
        paths = [str(getattr(f, "name", f)) for f in (files or []) if f]
        if not paths:
            return _patient_message("No recordings yet", "Upload the patient's recordings, then press "
                                    "Screen patient.", code="no-audio")
        if len(paths) > self.max_files:
            return _patient_message("Too many recordings", f"{len(paths)} files were uploaded; this page screens at "
                                    f"most {self.max_files} per patient.", fix="upload one patient's recordings",
                                    code="too-many")
        try:
            return self.analyse(paths, sites, patient_id, sex, age, model_name)
        except StethError as exc:
            return _patient_message("Could not screen the patient", exc.message, fix=exc.fix, code=exc.code)
        except Exception as exc:  # a public page shows a message, the log keeps the trace
            log.exception("demo: patient screening failed")
            return _patient_message("Could not screen the patient", f"steth-hub failed unexpectedly "
                                    f"({type(exc).__name__}); the details are in the server's log.",
                                    fix="try other recordings", code="internal")

    def analyse(self, paths: list[str], sites: Any, patient_id: Any, sex: Any, age: Any,
                model_name: str | None) -> tuple:
        from steth_hub.patient import PatientFacts as Facts
        from steth_hub.patient import RecordingInput, screen_patient
        from steth_hub.report import build_report, to_fhir, write_report

        site_lines = [" ".join(line.split())[:40] for line in str(sites or "").splitlines()]
        facts = PatientFacts.from_inputs(sex, age, None)
        pid = " ".join(str(patient_id or "").split())[:40] or "patient"
        model = self.catalog.get(model_name)
        inputs = [RecordingInput(path, site_lines[i] if i < len(site_lines) and site_lines[i] else None)
                  for i, path in enumerate(paths)]
        result = screen_patient(inputs, model, patient=Facts(pid, facts.sex, facts.age), check=self.check)
        report = build_report(result, model)
        self._prune()
        folder = Path(self._fresh_folder())
        pdf = write_report(report, folder / "steth-report.pdf")
        fhir = write_report(report, folder / "steth-report.fhir.json")
        record = report.to_dict()
        record["fhir_validated"] = bool(to_fhir(report))  # write_report validated it; kept for the API
        spectrogram = png_to_array(report.spectrogram_png) if report.spectrogram_png else None
        explanation = png_to_array(report.explanation_png) if report.explanation_png else None
        return (_patient_summary(report.data), spectrogram, explanation, str(pdf), str(fhir), record)

    def _fresh_folder(self) -> str:
        import tempfile

        self.out_dir.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(dir=self.out_dir)

    def _prune(self) -> None:
        """Delete reports older than the page keeps uploads."""
        import shutil
        import time

        cutoff = time.time() - self.settings.keep_uploads_s
        for folder in self.out_dir.glob("*") if self.out_dir.is_dir() else []:
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue


def _patient_message(title: str, message: str, *, fix: str | None = None, code: str = "error") -> tuple:
    text = f"### {_esc(title)}\n\n{_esc(message)}"
    if fix:
        text += f"\n\n**What to do:** {_esc(fix)}"
    return (text + f"\n\n{DISCLAIMER}", None, None, None, None,
            {"error": {"code": code, "message": message, "fix": fix}})


def _ci_text(entry: Mapping | None) -> str:
    from steth_hub.report import _ci

    return _ci(entry)


def _patient_summary(data: Mapping) -> str:
    """The patient's result as Markdown: the decision, one row per recording, the rejected ones, the model."""
    from steth_hub.explanation import decision_numbers

    res, facts = data["result"], data["patient"]
    about = PatientFacts(sex=facts.get("sex"), age=facts.get("age")).describe()
    lines = [f"### Patient {_esc(facts['patient_id'])}: "
             + (f"P(asthma) = {decision_numbers(res['probability'], res['threshold'])[0]}, "
                f"{'positive' if res['decision'] else 'negative'}" if res["probability"] is not None
                else "no result"), "",
             f"{_esc(res['statement'])}", "",
             f"- **Patient facts (not model inputs):** {_esc(about)}",
             f"- **Rule:** {_esc(res['aggregation'])}"]
    if res["drivers"]:
        lines.append(f"- **Driven by:** {', '.join(res['drivers'])} (pictures below: {res['deciding_recording']})")
    lines += ["", "| rec. | site | filter | P(asthma) | screen | clips | drives | quality |", "|---|---|---|---|---|---|---|---|"]
    for r in data["recordings"]:
        lines.append(f"| {r['id']} | {_esc(r['site'] or '-')} | {_esc(r['filter'] or '-')} | {r['probability']:.3f} | "
                     f"{'positive' if r['decision'] else 'negative'} | {r['n_clips']} | "
                     f"{'yes' if r['drives_result'] else '-'} | {_esc('; '.join(r['warnings']) or 'ok')} |")
    for r in data["rejected"]:
        lines.append(f"| {r['id']} | {_esc(r['site'] or '-')} | {_esc(r['filter'] or '-')} | - | **rejected** | - | - | "
                     f"{_esc(r['message'] + ('; fix: ' + r['fix'] if r.get('fix') else ''))} |")
    perf = data["performance"]
    if perf.get("available"):
        pooled = perf["pooled"]
        within = "; ".join(f"within {_esc(w['source'])} AUROC {_ci_text(w['auroc'])}" for w in perf["within_source"])
        lines += ["", f"**Validated** ({_esc(perf['method'])}): patient-level AUROC {_ci_text(pooled['auroc'])}, "
                      f"sensitivity {_ci_text(pooled['sensitivity'])}, specificity {_ci_text(pooled['specificity'])}"
                      + (f"; {within}" if within else "") + "."]
    else:
        lines += ["", f"**{_esc(perf.get('note') or 'Accuracy unknown.')}**"]
    lines += ["", f"Model: {_esc(data['model']['name'])} ({_esc(data['model']['classifier'])}), threshold "
                  f"{data['model']['threshold']:.3f}. The report (PDF) and the HL7 FHIR R4 JSON are below.",
              "", DISCLAIMER]
    return "\n".join(lines)


def _patient_tab(gr: Any, screener: PatientScreener, catalog: ModelCatalog) -> None:
    """The patient tab: several recordings in, one patient result, the report to download."""
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown(PATIENT_MODE_NOTE, elem_id="steth-patient-note")
            files = gr.File(file_count="multiple", file_types=["audio"], type="filepath",
                            label="Recordings of one patient", elem_id="steth-patient-files")
            sites = gr.Textbox(value="", lines=3, max_lines=12, label="Recording sites (optional)",
                               placeholder="one per line, in upload order, e.g. P L M; read from KAUH/ICBHI "
                                           "names when empty")
            patient_id = gr.Textbox(value="", max_lines=1, max_length=40, label="Patient ID (optional)")
            with gr.Accordion("Patient facts (optional)", open=False):
                gr.Markdown(PATIENT_NOTE)
                sex = gr.Dropdown(choices=[("not given", ""), ("female", "F"), ("male", "M")], value="", label="Sex")
                age = gr.Number(value=None, minimum=0, maximum=130, label="Age (years)")
            model = gr.Dropdown(choices=catalog.choices(), value=catalog.default, label="Model",
                                elem_id="steth-patient-model")
            button = gr.Button("Screen patient", variant="primary", elem_id="steth-patient-run")
        with gr.Column(scale=2):
            summary = gr.Markdown("Upload one patient's recordings, then press **Screen patient**.",
                                  label="patient summary", elem_id="steth-patient-result")
            spectrogram = gr.Image(label="deciding recording spectrogram", show_label=False, type="numpy",
                                   interactive=False, elem_id="steth-patient-spectrogram")
            explanation = gr.Image(label="deciding recording explanation", show_label=False, type="numpy",
                                   interactive=False, visible=False, elem_id="steth-patient-explanation")
            report_pdf = gr.File(label="report (PDF)", interactive=False, elem_id="steth-patient-pdf")
            report_fhir = gr.File(label="report (HL7 FHIR R4 JSON)", interactive=False, elem_id="steth-patient-fhir")
            with gr.Accordion("Result as JSON", open=False):
                record = gr.JSON(label="patient result", elem_id="steth-patient-json")

    def screen_patient_files(files, sites="", patient_id="", sex="", age=None, model_name=None):
        """Screen one patient's recordings; returns the summary, pictures, report files and JSON
        (the map's box shows only when there is a map)."""
        summary_, spectrogram_, explanation_, pdf_, fhir_, record_ = screener(files, sites, patient_id, sex, age,
                                                                             model_name)
        return (summary_, spectrogram_, gr.Image(value=explanation_, visible=explanation_ is not None), pdf_, fhir_,
                record_)

    button.click(screen_patient_files, inputs=[files, sites, patient_id, sex, age, model],
                 outputs=[summary, spectrogram, explanation, report_pdf, report_fhir, record],
                 api_name="screen_patient")


# --------------------------------------------------------------------------- the app
def build_app(models: Sequence[Any] | Mapping[str, Any] | None = None, *,
              max_seconds: float = DEFAULT_MAX_SECONDS, max_bytes: int = DEFAULT_MAX_BYTES,
              concurrency: int = DEFAULT_CONCURRENCY, queue_size: int = DEFAULT_QUEUE_SIZE,
              keep_uploads_s: int = DEFAULT_KEEP_UPLOADS_S, examples: bool = True) -> "gr.Blocks":
    """Build the demo page.

    Args:
        models: the models to offer: Hub names, model folders or loaded classifiers (a mapping
            gives them names). Default: the embedded ``steth/efficientat-asthma``.
        max_seconds: the longest recording accepted (checked from the header, before decoding).
        max_bytes: the largest upload accepted (checked before decoding).
        concurrency: requests screened at once; the rest wait in the queue.
        queue_size: requests allowed to wait; more are told the queue is full.
        keep_uploads_s: uploaded recordings are deleted after this many seconds.
        examples: list the example recordings shipped with steth-hub (one click screens one).

    Returns:
        A ``gr.Blocks`` with its queue configured; serve it with :func:`launch`. Its screening
        endpoint is ``/screen`` (``gradio_client``: ``api_name="/screen"``).
    """
    import gradio as gr

    settings = DemoSettings(max_seconds=float(max_seconds), max_bytes=int(max_bytes), concurrency=int(concurrency),
                            queue_size=int(queue_size), keep_uploads_s=int(keep_uploads_s))
    catalog = ModelCatalog(models)
    screener = Screener(catalog, settings)
    classifiers = installed_plugins("classifier")
    explainers = installed_plugins("explainer")

    with gr.Blocks(title="steth-hub demo", analytics_enabled=False,
                   delete_cache=(min(600, settings.keep_uploads_s), settings.keep_uploads_s)) as app:
        gr.Markdown(f"# {TITLE}\n\n{DISCLAIMER}", elem_id="steth-disclaimer")
        with gr.Tab("One recording", id="recording"):
            with gr.Row():
                with gr.Column(scale=1) as left:
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", format=None,
                                     label="Breath sound (record or upload)", elem_id="steth-audio")
                    gr.Markdown(settings.describe(), elem_id="steth-limits")
                    with gr.Accordion("Patient facts (optional)", open=False):
                        gr.Markdown(PATIENT_NOTE)
                        sex = gr.Dropdown(choices=[("not given", ""), ("female", "F"), ("male", "M")], value="",
                                          label="Sex")
                        age = gr.Number(value=None, minimum=0, maximum=130, label="Age (years)")
                        site = gr.Textbox(value="", max_lines=1, max_length=40, label="Recording site",
                                          placeholder="e.g. P R M (posterior right middle), Tc (trachea)")
                    model = gr.Dropdown(choices=catalog.choices(), value=catalog.default, label="Model",
                                        elem_id="steth-model")
                    explain_box = gr.Checkbox(value=False, label=EXPLAIN_LABEL, elem_id="steth-explain")
                    gr.Markdown(f"Installed classifier plugins: {', '.join(classifiers) or 'none'}. "
                                f"Installed explainers: {', '.join(explainers) or 'none'}.",
                                elem_id="steth-plugins")
                    button = gr.Button("Screen recording", variant="primary", elem_id="steth-run")
                with gr.Column(scale=2):
                    summary = gr.Markdown("Record or upload a breath sound, then press **Screen recording**.",
                                          label="summary", elem_id="steth-result")
                    warnings = gr.Markdown("", label="warnings", elem_id="steth-warnings")
                    spectrogram = gr.Image(label="spectrogram", show_label=False, type="numpy", interactive=False,
                                           elem_id="steth-spectrogram")
                    explanation = gr.Image(label="explanation", show_label=False, type="numpy", interactive=False,
                                           visible=False, elem_id="steth-explanation")
                    with gr.Accordion("Result as JSON", open=False):
                        result = gr.JSON(label="result", elem_id="steth-json")

            def screen_recording(recording, model_name=None, sex="", age=None, site="", explain=False):
                """Screen the uploaded recording (and explain it when asked); the map's box shows only
                when there is a map."""
                summary_, warnings_, spectrogram_, explanation_, result_ = screener(recording, model_name, sex, age,
                                                                                    site, explain)
                return (summary_, warnings_, spectrogram_,
                        gr.Image(value=explanation_, visible=explanation_ is not None), result_)

            inputs = [audio, model, sex, age, site, explain_box]
            outputs = [summary, warnings, spectrogram, explanation, result]
            button.click(screen_recording, inputs=inputs, outputs=outputs, api_name="screen")
            rows = example_rows() if examples else []
            if rows:
                with left:  # under the button, filled in once the outputs exist
                    shown = gr.Examples(examples=[list(row[1:]) for row in rows], inputs=[audio, sex, age, site],
                                        example_labels=[row[0] for row in rows], examples_per_page=len(rows),
                                        label="Example recordings: one click screens one (the label gives the "
                                              "known diagnosis)")
                shown.load_input_event.then(screen_recording, inputs=inputs, outputs=outputs, api_visibility="private")
        with gr.Tab("One patient, several recordings", id="patient"):
            _patient_tab(gr, PatientScreener(catalog, settings), catalog)
    app.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    app.steth_screener = screener  # launch() reads its settings and warms it up
    return app


def launch(app: "gr.Blocks | None" = None, *, host: str | None = "127.0.0.1", port: int | None = None,
           share: bool = False, prevent_thread_lock: bool = False, quiet: bool = False, warm_up: bool = True,
           **build_kwargs: Any):
    """Serve the demo (building it with ``build_kwargs`` when ``app`` is None).

    ``host`` None lets Gradio choose (``GRADIO_SERVER_NAME``, else 127.0.0.1), which is what a
    Hugging Face Space needs. Uploads above the app's ``max_bytes`` are refused by Gradio itself;
    no path is allowed beyond Gradio's own cache (uploads, outputs, the examples copied at build
    time); run history, the MCP server, PWA and server-side rendering are off. Returns what
    ``gr.Blocks.launch`` returns (with ``prevent_thread_lock=True``: it serves until ``app.close()``).
    With ``warm_up`` a background thread loads the default model and the libraries the pipeline
    needs (:meth:`Screener.warm_up`) while the server starts, so the first visitor does not wait.
    """
    if app is None:
        app = build_app(**build_kwargs)
    elif build_kwargs:
        raise TypeError(f"pass build options ({', '.join(build_kwargs)}) to build_app, not with an app")
    screener: Screener | None = getattr(app, "steth_screener", None)
    if screener is None:
        raise TypeError("launch() serves an app made by steth_hub.demo.build_app")
    settings = screener.settings
    if warm_up:
        threading.Thread(target=screener.warm_up, name="steth-demo-warm-up", daemon=True).start()
    # Gradio's own start-up lines tell a user to "set share=True in launch()": steth demo says it its own way
    launched = app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                          quiet=True, show_error=False, allowed_paths=[],
                          max_file_size=settings.max_bytes, ssr_mode=False, mcp_server=False, pwa=False,
                          footer_links=["api", "gradio"], run_history=False)
    if not quiet:
        for line in startup_lines(app.local_url, app.share_url):
            print(line, flush=True)
    if not prevent_thread_lock:
        app.block_thread()
    return launched


def startup_lines(local_url: str | None, share_url: str | None) -> list[str]:
    """What ``steth demo`` prints when the page is up: where it is, and how to share it."""
    lines = [f"* Running on local URL:  {local_url}"]
    if share_url:
        lines.append(f"* Public link (temporary, through Gradio's relay): {share_url}")
    else:
        lines.append("* To create a public link, run `steth demo --share` (traffic then goes through Gradio's relay).")
    lines.append("* Stop the page with Ctrl+C.")
    return lines
