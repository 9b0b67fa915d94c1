"""Where a recording is screened: decode, preprocess, featurise and classify, with honest warnings.

:func:`screen` takes one recording (a path, bytes, or an array with its sample rate) and a
model (the embedded ``steth/efficientat-asthma`` by default) and returns a :class:`ScreeningResult`:
P(asthma) as the mean of the clip probabilities, the decision at the model's threshold,
the clips used and every warning a user should see. :func:`screen_many` loads the model
once and screens many files; a file that fails is reported and the rest go on.

Screening is lenient where building a training corpus is strict. The preset's checks
(``min-duration``, ``clipping``) reject a recording from a corpus; here a recording that
fails them but is still long enough for one clip is screened *with a warning*. A recording
shorter than one clip, or one that cannot be decoded (corrupt, empty, silent, NaN), is an
error for that file. Decoding warnings (truncated, stereo...) pass through; a low sample rate
is reported only when the recording lacks frequencies the model reads (below its band limit).

Every result carries :data:`DISCLAIMER`: this is screening support, not a diagnosis.

A recording flows one way: decode -> preprocess (clips) -> classify -> result. What screening
computed on the way (the decoded recording, its clips, their waveforms and P(asthma) per clip,
the model) stays with the result as :attr:`ScreeningResult.computed` (a :class:`ScreenedClips`;
never in ``to_dict()``/JSON), so :func:`steth_hub.explanation.explain_result` and the demo
explain the same clips without preprocessing or classifying the recording again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from steth_hub.errors import AudioError, ModelError, StethError

DISCLAIMER = "Screening support, not a diagnosis: a clinician must confirm any result."
#: preset steps that reject recordings from a corpus but only warn when screening
LENIENT_STEPS = ("min-duration", "clipping")


@dataclass
class ScreenedClips:
    """What screening computed for one recording, kept for whoever explains or draws it next.

    Attributes:
        recording: the decoded :class:`~steth_hub.audio.Recording`.
        clips: the preprocessed :class:`~steth_hub.clips.Clip` objects the model read.
        waveforms: float32 ``[N, S]``, the clips stacked at the model's sample rate.
        probabilities: float64 ``[N]``, P(asthma) per clip.
        model: the model that screened them (a Classifier, or the light runtime's OnnxClassifier).
    """

    recording: Any
    clips: list
    waveforms: np.ndarray
    probabilities: np.ndarray
    model: Any

    def __repr__(self) -> str:
        return f"ScreenedClips({len(self.clips)} clips of {self.waveforms.shape[-1]} samples)"


@dataclass
class ScreeningResult:
    """The screening of one recording.

    Attributes:
        source: the file (or ``"<array>"``).
        probability: P(asthma) of the recording, the mean of its clips' probabilities.
        decision: True when ``probability >= threshold``.
        label: ``"asthma"`` or ``"not_asthma"`` (the decision as a word).
        threshold: the model's decision threshold.
        n_clips: how many clips the probability averages.
        clip_probabilities, clip_starts: per clip, P(asthma) and where it starts (seconds).
        warnings: what a user should know (short, clipped, low sample rate, truncated, an
            unstable decision...).
        model: the model's name or folder.
        stable: whether the decision survived the model's stability checks (harmless changes of
            the recording, :mod:`steth_hub.stability`); None when none were run.
        disclaimer: the "screening support, not a diagnosis" line.
        computed: what screening computed (:class:`ScreenedClips`: recording, clips, waveforms,
            probabilities, model), or None; kept out of ``to_dict()``, ``repr`` and comparisons.
    """

    source: str
    probability: float
    decision: bool
    label: str
    threshold: float
    n_clips: int
    clip_probabilities: list[float]
    clip_starts: list[float]
    warnings: list[str] = field(default_factory=list)
    model: str = ""
    stable: bool | None = None
    disclaimer: str = DISCLAIMER
    computed: ScreenedClips | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The result as plain JSON-ready values (without :attr:`computed`)."""
        return {f.name: list(getattr(self, f.name)) if isinstance(getattr(self, f.name), list) else getattr(self, f.name)
                for f in fields(self) if f.name != "computed"}

    def __str__(self) -> str:
        text = (f"{self.source}: P(asthma) = {self.probability:.3f} -> {self.label} "
                f"(threshold {self.threshold:.3f}, {self.n_clips} clips)")
        for warning in self.warnings:
            text += f"\n  warning: {warning}"
        return text + f"\n{self.disclaimer}"


# --------------------------------------------------------------------------- models
_MODEL_CACHE: dict[str, Any] = {}
#: ``auto`` (the ONNX export when the folder has one, else torch), ``onnx`` or ``torch``
RUNTIME_ENV = "STETH_RUNTIME"


def load_model(model=None, runtime: str | None = None):
    """A screening model from ``model``: None (the embedded default), a name or folder, or a loaded model.

    ``runtime`` (default: the ``STETH_RUNTIME`` environment variable, else ``"auto"``) chooses how
    a name or folder is loaded: ``"auto"`` uses the light ONNX runtime
    (:class:`steth_hub.runtime.OnnxClassifier`, no torch) when the folder carries an export and
    onnxruntime is installed, and the torch classifier otherwise; ``"onnx"`` insists on the
    export; ``"torch"`` loads the torch classifier (explanations need it; an ``OnnxClassifier``
    passed with ``runtime="torch"`` is reloaded from its folder). Loaded models are reused.
    """
    from steth_hub.classifier import Classifier
    from steth_hub.runtime import RUNTIMES, OnnxClassifier

    runtime = (runtime or os.environ.get(RUNTIME_ENV) or "auto").strip().lower()
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown screening runtime {runtime!r}", fix=f"use one of: {', '.join(RUNTIMES)} "
                                                                       f"(argument runtime= or {RUNTIME_ENV})")
    if isinstance(model, Classifier):
        return model
    if isinstance(model, OnnxClassifier):
        if runtime != "torch":
            return model
        model = model.directory
    from steth_hub.hub import DEFAULT_MODEL, from_pretrained

    name = DEFAULT_MODEL if model is None else os.fspath(model)
    key = str(Path(name).resolve()) if Path(name).exists() else name
    if runtime != "torch":
        light = _MODEL_CACHE.get(("onnx", key))
        if light is None:
            light = _load_light(name, runtime)
            if light is not None:
                _MODEL_CACHE[("onnx", key)] = light
        if light is not None:
            return light
    if key not in _MODEL_CACHE:
        _require_torch(name)
        _MODEL_CACHE[key] = from_pretrained(name)
    return _MODEL_CACHE[key]


def _load_light(name: str, runtime: str):
    """The ONNX export of ``name`` (None when it has none and ``runtime`` is ``"auto"``)."""
    import importlib.util
    import logging

    from steth_hub.hub import EMBEDDED, resolve
    from steth_hub.runtime import OnnxClassifier, has_onnx_export

    try:  # the embedded model and local folders resolve without huggingface_hub
        folder = EMBEDDED[name] if name in EMBEDDED and (EMBEDDED[name] / "steth.json").is_file() else resolve(name)
    except ImportError as exc:  # a Hub repo id needs huggingface_hub, which the screen extra lacks
        raise ModelError(f"{name!r} is a Hub repo id, and resolving it needs huggingface_hub ({exc})",
                         fix="pass a local model folder, or pip install huggingface_hub") from exc
    if not has_onnx_export(folder):
        if runtime == "onnx":
            raise ModelError("this model has no ONNX export", path=folder,
                             fix=f"run `steth export {folder}` (needs the train extra), or unset {RUNTIME_ENV}")
        return None
    if runtime == "auto" and importlib.util.find_spec("onnxruntime") is None:
        return None
    try:
        return OnnxClassifier.from_pretrained(folder)
    except ModelError as exc:
        if runtime == "onnx" or importlib.util.find_spec("torch") is None:
            raise
        logging.getLogger(__name__).warning("screening %s with torch: its ONNX export cannot be used (%s)",
                                            name, exc)
        return None


def _require_torch(name: str) -> None:
    """A clear error when the torch path is needed but torch is not installed (the screen extra)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ModelError(f"model {name!r} has no usable ONNX export, and its torch runtime needs torch, "
                         "which is not installed", fix="pip install 'steth-hub[train]', or screen with a model "
                                                       "exported by `steth export` (pip install 'steth-hub[screen]')")


def model_name(model) -> str:
    """How a result names its model: the Hub name, or the folder it was loaded from."""
    meta = getattr(model, "metadata", {}) or {}
    return str(meta.get("name") or meta.get("model_name") or model.plugin_name)


# --------------------------------------------------------------------------- one recording
class ScreeningPipeline:
    """A model's preset split into lenient checks (warnings) and the steps that make clips, and the
    stability checks screening runs for the model.

    ``stability``: None runs the checks the model asks for (``"stability_checks"`` in its
    ``steth.json``; none when it asks for none), True those or, for a model that asks for none, the
    default checks (:data:`steth_hub.stability.DEFAULT_CHECKS`), False none.
    """

    def __init__(self, model, stability: bool | None = None):
        from steth_hub.preprocess import Preprocessor, Preset, load_preset
        from steth_hub.stability import DEFAULT_CHECKS, check_list

        preset = load_preset(model.preset or None)
        checks = [{name: params} for name, params in preset.steps if name in LENIENT_STEPS]
        steps = [{name: params} for name, params in preset.steps if name not in LENIENT_STEPS]
        self.preset = preset
        self.checks = Preset(name=f"{preset.name}-checks", steps=checks).build() if checks else []
        self.preprocessor = Preprocessor(Preset(name=f"{preset.name}-screening", steps=steps,
                                                description=preset.description))
        self.sample_rate = preset.sample_rate
        params = {name: dict(p or {}) for name, p in preset.steps}
        #: seconds trimmed from each end, and the clip length: a recording needs 2 * trim + clip
        self.trim_seconds = float(sum(float((p or {}).get("seconds", 0.0)) for n, p in preset.steps if n == "trim"))
        self.clip_seconds = float(preset.clip_seconds or params.get("cut", {}).get("seconds") or 0.0)
        self.min_training_seconds = float(params.get("min-duration", {}).get("seconds") or 0.0)
        #: the highest frequency the model reads: the preset's band limit, else the clips' Nyquist
        tops = [float(p["max_hz"]) for n, p in preset.steps if n == "bandlimit" and (p or {}).get("max_hz")]
        if preset.sample_rate:
            tops.append(preset.sample_rate / 2.0)
        band = model.band_hz() if callable(getattr(model, "band_hz", None)) else None  # the band the model reads
        if band and isinstance(band[1], (int, float)) and band[1] > 0:
            tops.append(float(band[1]))
        self.top_hz = min(tops) if tops else None
        asked = (getattr(model, "metadata", None) or {}).get("stability_checks")
        own = check_list(asked, model_name(model)) if asked is not None else ()
        if stability is None:
            self.stability_checks = own
        else:  # True: the model's own checks, or the default ones for a model that asks for none
            self.stability_checks = (own or DEFAULT_CHECKS) if stability else ()

    @property
    def min_seconds(self) -> float:
        """The shortest recording that gives one clip."""
        return 2 * self.trim_seconds + self.clip_seconds

    def clips(self, recording, recording_id: str) -> tuple[list, list[str]]:
        from steth_hub.clips import Clip
        from steth_hub.errors import RecordingRejected

        warnings = []
        whole = [Clip(np.asarray(recording.samples, dtype=np.float32), recording.sample_rate, recording_id, 0.0, 0)]
        for name, check in self.checks:
            try:
                check(whole)
            except RecordingRejected as exc:
                warnings.append(self._lenient_warning(name, exc))
        try:
            clips = self.preprocessor.run(recording, recording_id)
        except RecordingRejected as exc:
            need = self.min_seconds
            if exc.code != "too-short" or not self.clip_seconds or recording.duration >= need - 1e-6:
                raise  # another rule (a plugin step, say): its own message says why
            lasts = np.floor(recording.duration * 100) / 100  # never rounded up to what is needed
            raise RecordingRejected(
                f"recording lasts {lasts:.2f} s; this model needs at least {need:g} s (it trims "
                f"{self.trim_seconds:g} s at each end and reads {self.clip_seconds:g} s clips)",
                path=exc.path or recording_id, code="too-short",
                fix=f"record at least {int(np.ceil(need))} s{self._ideally(need)}") from exc
        return clips, warnings

    @staticmethod
    def _ideally(need: float) -> str:
        """", ideally 10 s or more" where 10 s is more than needed (the shared excerpts are 10 s)."""
        return ", ideally 10 s or more" if need < 10 else ""

    def _lenient_warning(self, name: str, exc) -> str:
        """A check that would keep the recording out of a training corpus, said for the person screening."""
        if name == "clipping":
            return (f"{exc.message}: the recording is distorted and the model never saw such recordings, so "
                    "treat the result as unreliable (record again with a lower input gain)")
        if name == "min-duration":
            advice = max(10.0, self.min_training_seconds)
            return (f"{exc.message}: shorter than any recording the model was trained on "
                    f"(at least {self.min_training_seconds:g} s); record {advice:g} s or more for a steadier result")
        return f"{exc.message} (screened anyway; a training corpus would reject it: {name})"

    def decoding_warnings(self, recording) -> list[str]:
        """The decoder's warnings that matter to this model: a low sample rate only when the
        recording lacks frequencies the model reads (a 4 kHz file is complete for a model that
        reads up to 2 kHz)."""
        out = []
        rate = getattr(recording, "original_sample_rate", None) or recording.sample_rate
        for warning in recording.warnings:
            if warning.startswith("low sample rate") and self.top_hz is not None:
                if rate / 2.0 >= self.top_hz - 1e-6:
                    continue
                warning = (f"low sample rate {int(rate)} Hz: nothing above {int(rate) // 2} Hz was recorded, "
                           f"but this model reads up to {self.top_hz:g} Hz, so its result is less reliable "
                           "(record at a higher sample rate)")
            out.append(warning)
        return out


def to_recording(path_or_array, sample_rate):
    """Decode a path or bytes, or wrap an array (which needs its sample rate)."""
    from steth_hub.audio import Recording, decode, from_array

    if isinstance(path_or_array, Recording):
        return path_or_array
    if isinstance(path_or_array, np.ndarray) or (isinstance(path_or_array, (list, tuple))
                                                   and not isinstance(path_or_array, (str, bytes))):
        if sample_rate is None:
            raise AudioError("an array needs its sample_rate", path="<array>", code="sample-rate",
                             fix="call screen(samples, sample_rate=...)")
        return from_array(np.asarray(path_or_array), int(sample_rate))
    if isinstance(path_or_array, (str, os.PathLike, bytes, bytearray)):
        try:
            return decode(path_or_array)
        except AudioError as exc:
            if exc.code != "too-long":
                raise
            raise AudioError(exc.message, path=exc.path, code=exc.code,
                             fix="screen a 10-60 s stretch of it (for example: ffmpeg -i INPUT -ss 0 -t 30 part.wav); "
                                 "the model reads clips of a few seconds, so hours of audio add nothing") from exc
    raise AudioError(f"cannot screen a {type(path_or_array).__name__}", path=str(path_or_array)[:80],
                     code="corrupt", fix="pass a file path, bytes, or a numpy array with sample_rate")


def screen_loaded(path_or_array, model, pipeline: ScreeningPipeline, sample_rate=None, *,
                  keep: bool = True) -> ScreeningResult:
    """Screen one recording with a model and its pipeline already built (many files reuse both).

    One preprocessing and one call of ``model.predict_proba``; with ``keep`` what they computed
    stays on the result (:attr:`ScreeningResult.computed`) for the explanation and the demo.
    """
    recording = to_recording(path_or_array, sample_rate)
    source = recording.source
    clips, warnings = pipeline.clips(recording, source)
    rates = {c.sample_rate for c in clips}
    if rates != {model.sample_rate}:
        raise ModelError(f"the preset gives clips at {sorted(rates)} Hz but the model expects {model.sample_rate} Hz",
                         fix="save the model with the preset it was trained with")
    waveforms, probs = _predict(model, clips)
    if probs.shape != (len(clips),) or not np.isfinite(probs).all():
        raise ModelError(f"the model returned {probs.shape} probabilities for {len(clips)} clips, or non-finite ones",
                         fix="check the classifier plugin's predict_proba")
    probability = float(probs.mean())
    decision = bool(probability >= model.threshold)
    stable = None
    if pipeline.stability_checks:
        from steth_hub.stability import check_stability, unstable_warning

        flagged = len(warnings)  # the quality checks the original already fails (clipping...)
        stability = check_stability(recording, probability, float(model.threshold),
                                    lambda copy: _probability_of(copy, model, pipeline, flagged),
                                    pipeline.stability_checks)
        stable = stability["stable"] if stability["checked"] else None
        warning = unstable_warning(probability, float(model.threshold), stability)
        if warning:
            warnings = warnings + [warning]
    return ScreeningResult(
        source=source, probability=probability, decision=decision, label="asthma" if decision else "not_asthma",
        threshold=float(model.threshold), n_clips=len(clips), clip_probabilities=[float(p) for p in probs],
        clip_starts=[float(c.start) for c in clips], warnings=pipeline.decoding_warnings(recording) + warnings,
        model=model_name(model), stable=stable,
        computed=ScreenedClips(recording, clips, waveforms, probs, model) if keep else None)


def _probability_of(recording, model, pipeline: ScreeningPipeline, flagged: int = 0) -> float | None:
    """P(asthma) of a changed copy of a recording (a stability check); None when screening refuses
    it, or when it fails more quality checks than the original (``flagged``): a copy a raised gain
    clipped is a damaged recording, not a harmless change."""
    from steth_hub.errors import StethError

    try:
        clips, warnings = pipeline.clips(recording, recording.source)
    except StethError:
        return None
    if len(warnings) > flagged:
        return None
    _, probs = _predict(model, clips)
    return float(probs.mean()) if probs.size and np.isfinite(probs).all() else None


def _predict(model, clips) -> tuple[np.ndarray, np.ndarray]:
    """The clips' waveforms (float32) and the model's P(asthma) for each (float64), no feature cache."""
    from steth_hub.feature_cache import feature_cache_disabled

    waveforms = np.stack([c.samples for c in clips]).astype(np.float32)
    with feature_cache_disabled():
        return waveforms, np.asarray(model.predict_proba(waveforms), dtype=np.float64)


def screen(path_or_array, sample_rate: int | None = None, model=None, *,
           stability: bool | None = None) -> ScreeningResult:
    """Screen one recording for asthma.

    Args:
        path_or_array: a file path, the file's bytes, or a 1-D array of samples.
        sample_rate: the array's sample rate (needed for arrays only).
        model: None for the embedded default ``steth/efficientat-asthma``, a model folder or Hub name, or a
            loaded :class:`~steth_hub.classifier.Classifier`.
        stability: None runs the stability checks the model asks for, True those or the default
            ones, False none (:class:`ScreeningPipeline`); an unstable decision gets a warning.

    Returns:
        A :class:`ScreeningResult`; its ``computed`` keeps the recording, clips and per-clip
        probabilities (``steth_hub.explain(result)`` explains them without screening again).

    Raises:
        AudioError: the recording cannot be used (missing, corrupt, empty, silent, NaN, too long...).
        RecordingRejected: it is shorter than one clip.
        ModelError: the model cannot be loaded.
    """
    model = load_model(model)
    return screen_loaded(path_or_array, model, ScreeningPipeline(model, stability), sample_rate)


def screen_many(paths: Iterable, model=None, progress: bool = True, *,
                keep: bool = False, stability: bool | None = None) -> tuple[list[ScreeningResult], list[dict]]:
    """Screen many recordings with one model; returns ``(results, failures)``.

    A failure is ``{"source", "code", "message", "fix"}``; the other files are still screened.
    ``keep`` keeps each result's :attr:`~ScreeningResult.computed` (off: a long batch holds no audio);
    ``stability`` as in :func:`screen`.
    """
    from tqdm.auto import tqdm

    model = load_model(model)
    pipeline = ScreeningPipeline(model, stability)
    results, failures = [], []
    paths = list(paths)
    for path in tqdm(paths, desc="screening", unit="file", disable=not progress or len(paths) < 2):
        try:
            results.append(screen_loaded(path, model, pipeline, keep=keep))
        except StethError as exc:
            failures.append({"source": os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(exc.path),
                             "code": exc.code, "message": exc.message, "fix": exc.fix})
        except Exception as exc:  # an unexpected failure on one file must not stop the batch
            failures.append({"source": os.fspath(path) if isinstance(path, (str, os.PathLike)) else "<input>",
                             "code": "error", "message": f"{type(exc).__name__}: {exc}",
                             "fix": "report this with the file attached"})
    return results, failures
