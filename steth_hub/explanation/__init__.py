"""Where the model looked: explanation maps placed over the spectrogram of the whole recording.

:func:`explain` screens one recording exactly as :func:`steth_hub.screening.screen` does (same
model, same preset, same clips, same P(asthma)), asks an explainer plugin for a map per clip,
and places those maps on the time x frequency grid of the spectrogram a person looks at;
:func:`explain_result` (or ``explain(result)``) explains a :class:`~steth_hub.screening.ScreeningResult`
with the clips and P(asthma) it computed, screening nothing again:

* an **explainer** (``steth plugins --kind explainer``) returns :class:`ClipMaps`: one
  non-negative map per clip on the classifier's own input grid, with the centre frequency
  (Hz) of each row and the time (s, from the clip's start) of each column, which the
  classifier itself declares (``input_grid``). The built-in ones are ``integrated-gradients``
  (captum; any classifier with an input grid), ``gradcam`` (pytorch-grad-cam; any CNN classifier
  that names its ``gradcam_layer``) and ``attention`` (AST only: gradient-weighted attention
  relevance, Chefer et al. 2021); a classifier names its ``default_explainer``; see
  ``docs/explainers.md``;
* the **display grid** is a log-mel spectrogram (128 mel bands, 0 Hz to 8 kHz or half the
  model's sample rate, 64 ms window, 10 ms hop) of the preprocessed recording, i.e. the
  clips the model saw, put back at their start times;
* **placing** (:func:`place_maps`): each clip's map is scaled to a maximum of 1 (the raw
  scale of an attribution means nothing across clips), its rows interpolated from the
  model's frequency grid onto the display's (linearly in mel), its columns onto the display
  frames the clip covers; where clips overlap the maps are averaged. The result is scaled
  to a maximum of 1: "1" is the cell the model relied on most in this recording.

The picture (:meth:`Explanation.save_png`) shows the spectrogram, the spectrogram with the
map overlaid, and P(asthma) per clip, with time in seconds, frequency in Hz, the model, the
decision at its threshold and "screening support, not a diagnosis". The band above what the
recording holds (half its sample rate, or the preset's band limit) is hatched and labelled,
and stretches no clip covered are shaded "not analysed".

Which class a map explains: by default the decided one (``target="decision"``): evidence for
asthma when P(asthma) is at or above the threshold, evidence against it otherwise. Pass
``target="asthma"`` to always see the evidence for asthma.

Importing this package imports neither torch nor matplotlib; explaining does. The picture is
drawn on a bare matplotlib ``Figure`` (Agg canvas), never through pyplot's global state.

One module per job (everything is importable from ``steth_hub.explanation`` too):
:mod:`~steth_hub.explanation.choosing` (which explainer, running it, :class:`ClipMaps`, helpers
for explainer plugins), :mod:`~steth_hub.explanation.placing` (the display grid and
:func:`place_maps`), :mod:`~steth_hub.explanation.drawing` (the picture); this module holds the
result (:class:`Explanation`) and the API.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# the mel scales in numpy (no transformers), also imported from here by explainer plugins
from steth_hub.display import hz_to_mel, mel_centres, mel_to_hz
from steth_hub.errors import ConfigError, ModelError
from steth_hub.explanation.choosing import (TARGETS, ClipMaps, _run_explainer, _target_class, evaluating,
                                            explainers_for, load_explainer, logits_module, network_input, supports)
from steth_hub.explanation.drawing import DISCLAIMER, decision_numbers, draw
from steth_hub.explanation.placing import (DISPLAY_HOP_MS, DISPLAY_MAX_HZ, DISPLAY_MELS, DISPLAY_WINDOW_MS,
                                           _display_waveform, band_limit, display_spectrogram, interp_matrix,
                                           place_maps)

__all__ = [
    "DISCLAIMER", "DISPLAY_HOP_MS", "DISPLAY_MAX_HZ", "DISPLAY_MELS", "DISPLAY_WINDOW_MS", "TARGETS", "ClipMaps",
    "Explanation", "band_limit", "decision_numbers", "display_spectrogram", "draw", "evaluating", "explain",
    "explain_result", "explainers_for", "hz_to_mel", "interp_matrix", "load_explainer", "logits_module",
    "mel_centres", "mel_to_hz", "network_input", "place_maps", "supports",
]


@dataclass
class Explanation:
    """Where the model looked in one recording.

    Attributes:
        source: the file (or ``"<array>"``).
        map: ``[F, T]`` on the display grid, in [0, 1] (1: where the model relied on most).
        times: ``[T]`` seconds from the recording's start (display frame times).
        frequencies: ``[F]`` Hz, the centre of each display row (mel-spaced).
        spectrogram: ``[F, T]`` log-mel in dB, the display the map is drawn on.
        coverage: ``[T]`` how many clips cover each column (0: not analysed).
        probability: P(asthma) of the recording (mean over clips, as ``steth screen``).
        threshold, decision, label: the model's threshold and decision.
        target: the class the map explains (``"asthma"`` or ``"not_asthma"``).
        clip_maps: the explainer's maps on the model's own grid.
        clip_starts, clip_seconds, clip_probabilities: per clip.
        explainer, model: their names.
        sample_rate: the rate of the preprocessed clips.
        band_limit_hz: above this the recording holds nothing (hatched in the picture).
        warnings: from decoding and screening.
    """

    source: str
    map: np.ndarray
    times: np.ndarray
    frequencies: np.ndarray
    spectrogram: np.ndarray
    coverage: np.ndarray
    probability: float
    threshold: float
    decision: bool
    target: str
    clip_maps: ClipMaps
    clip_starts: np.ndarray
    clip_seconds: np.ndarray
    clip_probabilities: np.ndarray
    explainer: str
    model: str
    sample_rate: int
    band_limit_hz: float
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "asthma" if self.decision else "not_asthma"

    @property
    def duration(self) -> float:
        return float(self.times[-1] + DISPLAY_HOP_MS / 1000.0) if len(self.times) else 0.0

    def summary(self) -> dict:
        """Where the map peaks, and the share of it above the band limit (a model looking at
        an empty band has learned something about the recording device, not the lungs)."""
        if self.map.size and self.map.max() > 0:
            f, t = np.unravel_index(int(np.argmax(self.map)), self.map.shape)
            peak = {"time_s": round(float(self.times[t]), 3), "frequency_hz": round(float(self.frequencies[f]), 1)}
            above = float(self.map[self.frequencies > self.band_limit_hz].sum() / self.map.sum())
        else:
            peak, above = None, 0.0
        return {"peak": peak, "share_above_band_limit": round(above, 4)}

    def to_dict(self, arrays: bool = False) -> dict:
        """JSON-ready facts; ``arrays=True`` adds the map, spectrogram and axes as nested lists."""
        out = {
            "source": self.source, "model": self.model, "explainer": self.explainer, "target": self.target,
            "probability": float(self.probability), "threshold": float(self.threshold),
            "decision": bool(self.decision), "label": self.label, "n_clips": int(len(self.clip_starts)),
            "clip_starts": [float(x) for x in self.clip_starts],
            "clip_seconds": [float(x) for x in self.clip_seconds],
            "clip_probabilities": [float(x) for x in self.clip_probabilities],
            "sample_rate": int(self.sample_rate), "band_limit_hz": float(self.band_limit_hz),
            "duration_s": round(self.duration, 3), "map_shape": list(self.map.shape),
            **self.summary(), "warnings": list(self.warnings), "disclaimer": DISCLAIMER,
        }
        if arrays:
            out.update(times=self.times.round(4).tolist(), frequencies=self.frequencies.round(2).tolist(),
                       map=self.map.round(4).tolist(), spectrogram=self.spectrogram.round(2).tolist())
        return out

    # ------------------------------------------------------------------ the picture
    def figure(self):
        """The picture as a matplotlib Figure (Agg canvas; not attached to any window)."""
        return draw(self)

    def png_bytes(self, dpi: int = 110) -> bytes:
        """The picture as PNG bytes."""
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=dpi)
        return buffer.getvalue()

    def save_png(self, path: str | os.PathLike, dpi: int = 110) -> Path:
        """Write the picture to ``path`` atomically (a half-written PNG never replaces a good one)."""
        from steth_hub.fileio import atomic_write_bytes

        return atomic_write_bytes(path, self.png_bytes(dpi=dpi))


def explain(source, model=None, explainer: str | None = None, sample_rate: int | None = None, *,
            target: str = "decision") -> Explanation:
    """Explain the screening of one recording: where the model looked, over its spectrogram.

    Args:
        source: a file path, its bytes, a :class:`~steth_hub.audio.Recording`, a 1-D array
            (then ``sample_rate`` is needed), or a :class:`~steth_hub.screening.ScreeningResult`
            that kept what it computed (then its clips and P(asthma) are explained as they are:
            nothing is preprocessed or classified again; see :func:`explain_result`).
        model: None (the embedded default ``steth/efficientat-asthma``), a model folder or Hub name, or a loaded
            :class:`~steth_hub.classifier.Classifier`.
        explainer: an explainer plugin name; default: the classifier's ``default_explainer``.
        sample_rate: the array's sample rate.
        target: ``"decision"`` (default: explain the class decided at the threshold),
            ``"asthma"`` or ``"not_asthma"``.

    Returns:
        An :class:`Explanation` (``.map``, ``.save_png(path)``, ``.to_dict()``...).

    Raises:
        AudioError / RecordingRejected: the recording cannot be screened.
        ModelError: the model cannot be loaded.
        PluginError: no (or no compatible) explainer for this model.
    """
    from steth_hub.hub import DEFAULT_MODEL

    from steth_hub import screening

    if isinstance(source, screening.ScreeningResult):
        return explain_result(source, model=model, explainer=explainer, target=target)
    _target_class(target, False)  # an unknown target fails before anything is loaded
    classifier = screening.load_model(model, runtime="torch")  # explainers need the torch network
    if model is None:
        model_label = DEFAULT_MODEL
    elif isinstance(model, (str, os.PathLike)):
        model_label = os.fspath(model)
    else:
        model_label = screening.model_name(classifier)
    explainer_name, engine = load_explainer(classifier, explainer)
    # screened once, with the torch model: the same clips and P(asthma) as `steth screen`
    result = screening.screen_loaded(screening.to_recording(source, sample_rate), classifier,
                                     screening.ScreeningPipeline(classifier, stability=False))  # a map needs P only
    return _explain_screened(result, classifier, explainer_name, engine, target, model_label)


def explain_result(result, model=None, explainer: str | None = None, *, target: str = "decision") -> Explanation:
    """Explain a screening result with the clips and P(asthma) it computed: one preprocessing
    and one forward pass serve both the result and its explanation.

    Args:
        result: a :class:`~steth_hub.screening.ScreeningResult` from :func:`steth_hub.screen`
            (its ``computed`` holds the recording, the clips and their probabilities).
        model: the torch classifier to explain with (a loaded one, a folder or a Hub name);
            default: the torch form of the model that screened (a light-runtime model is
            reloaded from its folder with torch: explainers need gradients).
        explainer, target: as :func:`explain`.

    The decision explained (``target="decision"``) and the P(asthma) shown are the result's,
    even when it was screened by the light runtime (equal to torch's within 1e-4).
    """
    from steth_hub import screening

    computed = getattr(result, "computed", None)
    if computed is None:
        raise ConfigError("this screening result did not keep its clips (computed is None)",
                          fix="screen with steth_hub.screen(...) (or screen_many(..., keep=True)), or call "
                              "steth_hub.explain(path) to screen and explain at once")
    _target_class(target, False)
    classifier = screening.load_model(computed.model if model is None else model, runtime="torch")
    if int(classifier.sample_rate) != int(computed.model.sample_rate):
        raise ModelError(f"the clips are at {computed.model.sample_rate} Hz but this model reads "
                         f"{classifier.sample_rate} Hz", fix="explain with the model that screened the recording")
    explainer_name, engine = load_explainer(classifier, explainer)
    return _explain_screened(result, classifier, explainer_name, engine, target, result.model)


def _explain_screened(result, classifier, explainer_name: str, engine, target: str, model_label: str) -> Explanation:
    """The explainer's maps for the result's own clips, placed on the display grid."""
    computed = result.computed
    recording, clips = computed.recording, computed.clips
    target_class = _target_class(target, result.decision)
    clip_maps = _run_explainer(engine, classifier, computed.waveforms, target_class, explainer_name)

    rate = int(classifier.sample_rate)
    spectrogram, frequencies, times = display_spectrogram(_display_waveform(recording, clips, rate), rate)
    starts = np.asarray([c.start for c in clips], dtype=np.float64)
    seconds = np.asarray([c.duration for c in clips], dtype=np.float64)
    placed, coverage = place_maps(clip_maps, starts, seconds, times, frequencies)
    if placed.shape != spectrogram.shape:  # an internal invariant, kept loud
        raise ModelError(f"map {placed.shape} and spectrogram {spectrogram.shape} differ",
                         fix="report this with the recording attached")
    return Explanation(
        source=result.source, map=placed, times=times, frequencies=frequencies, spectrogram=spectrogram,
        coverage=coverage, probability=float(result.probability), threshold=float(result.threshold),
        decision=bool(result.decision), target="asthma" if target_class == 1 else "not_asthma",
        clip_maps=clip_maps, clip_starts=starts, clip_seconds=seconds,
        clip_probabilities=np.asarray(result.clip_probabilities, dtype=np.float64), explainer=explainer_name,
        model=model_label, sample_rate=rate, band_limit_hz=band_limit(recording, classifier),
        warnings=list(result.warnings))
