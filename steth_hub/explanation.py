"""Where the model looked: explanation maps placed over the spectrogram of the whole recording.

:func:`explain` screens one recording exactly as :func:`steth_hub.screening.screen` does (same
model, same preset, same clips, same P(asthma)), asks an explainer plugin for a map per clip,
and places those maps on the time x frequency grid of the spectrogram a person looks at:

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

Importing this module imports neither torch nor matplotlib; explaining does. The picture is
drawn on a bare matplotlib ``Figure`` (Agg canvas), never through pyplot's global state.
"""

from __future__ import annotations

import inspect
import io
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# the mel scales in numpy (no transformers), also imported from here by explainer plugins
from steth_hub.display import hz_to_mel, mel_centres, mel_to_hz  # noqa: F401
from steth_hub.errors import ConfigError, ModelError, PluginError

#: what a map can explain
TARGETS = ("decision", "asthma", "not_asthma")
#: the display spectrogram: mel bands, window and hop (ms), and its top frequency
DISPLAY_MELS = 128
DISPLAY_WINDOW_MS = 64.0
DISPLAY_HOP_MS = 10.0
DISPLAY_MAX_HZ = 8000.0
DISCLAIMER = "screening support, not a diagnosis"


# =========================================================================== what an explainer returns
@dataclass
class ClipMaps:
    """Explanation maps of a batch of clips, on the classifier's own input grid.

    Attributes:
        maps: float32 ``[N, F, T]``, non-negative; larger means the model relied on it more.
        frequencies: ``[F]`` centre frequency in Hz of each row, increasing.
        times: ``[T]`` time in seconds of each column, from the clip's start, increasing.
            Columns past the clip's end (padding added by a front end) are ignored when placed.
        target: the class the maps explain (``"asthma"`` or ``"not_asthma"``).
        method: a short name of the method (``"attention relevance"``, ``"grad-cam"``...).
    """

    maps: np.ndarray
    frequencies: np.ndarray
    times: np.ndarray
    target: str = "asthma"
    method: str = ""

    def __post_init__(self) -> None:
        self.maps = np.nan_to_num(np.asarray(self.maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        self.frequencies = np.asarray(self.frequencies, dtype=np.float64).reshape(-1)
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        if self.maps.ndim != 3:
            raise PluginError(f"explainer maps must be [clips, frequencies, times], got shape {self.maps.shape}",
                              fix="return one 2-D map per clip")
        if self.maps.shape[1:] != (len(self.frequencies), len(self.times)):
            raise PluginError(f"explainer maps {self.maps.shape} do not match {len(self.frequencies)} frequencies "
                              f"and {len(self.times)} times", fix="give one frequency per row and one time per column")
        for name, axis in (("frequencies", self.frequencies), ("times", self.times)):
            if len(axis) == 0 or not np.isfinite(axis).all() or (len(axis) > 1 and np.any(np.diff(axis) <= 0)):
                raise PluginError(f"explainer {name} must be finite and strictly increasing",
                                  fix=f"list the {name} of the map's rows/columns in increasing order")
        self.maps = np.maximum(self.maps, 0.0)

    def __len__(self) -> int:
        return len(self.maps)


# =========================================================================== choosing an explainer
def _classifier_class(classifier):
    """The classifier's class: of an object, or looked up by plugin name in the registry (None if unknown)."""
    if not isinstance(classifier, str):
        return type(classifier)
    from steth_hub.registry import get_registry

    try:
        return get_registry().get("classifier", classifier).load()
    except Exception:  # an uninstalled plugin supports no capability-based explainer
        return None


def _implements(cls, method: str) -> bool:
    """True when the classifier class provides ``method`` (an ``input_grid`` of its own, not the base's)."""
    from steth_hub.classifier import Classifier

    found = getattr(cls, method, None) if cls is not None else None
    return callable(found) and found is not getattr(Classifier, method, None)


def supports(spec, classifier) -> bool:
    """Whether explainer ``spec`` can explain ``classifier`` (an object or a plugin name).

    An explainer lists the classifiers it is made for by name (``options["classifiers"]``), or the
    methods it needs a classifier to have (``options["needs"]``, e.g. ``["input_grid",
    "gradcam_layer"]``): then any classifier that declares them is supported, with no core edit.
    """
    options = spec.options or {}
    plugin = classifier if isinstance(classifier, str) else getattr(classifier, "plugin_name", None)
    names = list(options.get("classifiers") or [])
    if names and plugin not in names:
        return False
    needs = list(options.get("needs") or [])
    if needs:
        cls = _classifier_class(classifier)
        return all(_implements(cls, method) for method in needs)
    return True


def explainers_for(classifier) -> list[str]:
    """Installed explainers that can explain ``classifier`` (a loaded classifier or a plugin name)."""
    from steth_hub.registry import get_registry

    return sorted({reg.spec.name for reg in get_registry().registrations("explainer") if supports(reg.spec, classifier)})


def load_explainer(classifier, name: str | None = None) -> tuple[str, Any]:
    """``(name, explainer object)`` for ``classifier``: the named one, or the classifier's ``default_explainer``."""
    from steth_hub.registry import get_registry

    plugin = getattr(classifier, "plugin_name", None) or type(classifier).__name__
    compatible = explainers_for(classifier)
    if name is None:
        default = getattr(classifier, "default_explainer", None)
        if default in compatible:
            name = default
        elif compatible:
            name = compatible[0]
        else:
            raise PluginError(f"no installed explainer supports the {plugin!r} classifier",
                              fix="implement input_grid() on the classifier (CONTRIBUTING.md), or install an "
                                  "explainer plugin that supports it (steth plugins --kind explainer)")
    spec = get_registry().get("explainer", name)
    if not supports(spec, classifier):
        options = spec.options or {}
        wants = (", ".join(options.get("classifiers") or []) or
                 "classifiers with " + " and ".join(f"{m}()" for m in options.get("needs") or []))
        raise PluginError(f"explainer {name!r} supports {wants}, not the {plugin!r} classifier",
                          fix=f"use one of: {', '.join(compatible) or 'none installed'}")
    return name, spec.create()


def _target_class(target: str, decision: bool) -> int:
    if target not in TARGETS:
        raise ConfigError(f"unknown explanation target {target!r}", fix=f"use one of: {', '.join(TARGETS)}")
    if target == "decision":
        return 1 if decision else 0
    return 1 if target == "asthma" else 0


def _run_explainer(engine, classifier, waveforms: np.ndarray, target: int, name: str) -> ClipMaps:
    """Call ``engine.explain``; passes ``target`` to explainers that accept it."""
    explain_fn = getattr(engine, "explain", None)
    if not callable(explain_fn):
        raise PluginError(f"explainer {name!r} has no explain(classifier, waveforms) method",
                          fix="its factory must return an object with explain()")
    try:
        accepts_target = "target" in inspect.signature(explain_fn).parameters
    except (TypeError, ValueError):
        accepts_target = False
    maps = explain_fn(classifier, waveforms, target=target) if accepts_target else explain_fn(classifier, waveforms)
    if not isinstance(maps, ClipMaps):
        raise PluginError(f"explainer {name!r} returned {type(maps).__name__}, not ClipMaps",
                          fix="return steth_hub.explanation.ClipMaps(maps, frequencies, times)")
    if len(maps) != len(waveforms):
        raise PluginError(f"explainer {name!r} returned {len(maps)} maps for {len(waveforms)} clips",
                          fix="return one map per clip")
    return maps


# =========================================================================== helpers for explainer plugins
def network_input(classifier, waveforms: np.ndarray):
    """The classifier's network input for clips ``[N, S]``: its own featuriser and normalisation
    (``classifier.normalise(classifier.featurise(...))``, the protocol of steth_hub.train)."""
    for needed in ("featurise", "normalise", "logits"):
        if not callable(getattr(classifier, needed, None)):
            raise PluginError(f"classifier {getattr(classifier, 'plugin_name', '?')!r} has no {needed}() method, "
                              "so its input cannot be explained", fix="explain a torch classifier (steth_hub.train.TorchClassifier)")
    waveforms = np.asarray(waveforms, dtype=np.float32)
    if waveforms.ndim == 1:
        waveforms = waveforms[None, :]
    return classifier.normalise(classifier.featurise(waveforms, classifier.sample_rate)).float()


@contextmanager
def evaluating(net) -> Iterator[None]:
    """Eval mode (no dropout, fixed batch-norm statistics) while explaining; the previous mode after."""
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def logits_module(classifier, net):
    """A ``torch.nn.Module`` computing ``classifier.logits(net, x)``: one forward, whatever the model's API."""
    import torch

    class ClassifierLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return classifier.logits(self.net, x)

    return ClassifierLogits()


# =========================================================================== grids
def decision_numbers(probability: float, threshold: float) -> tuple[str, str]:
    """P(asthma) and the threshold as text, for a sentence that compares them.

    The threshold has 3 decimals (as the CLI and the model card show it), P 2 decimals, or 3
    within 0.005 of the threshold; where the shown numbers would still put P on the wrong side
    of the shown threshold (P = 0.4971 below 0.49715 would read "0.497 ... threshold 0.497"),
    both get more decimals until they do not.
    """
    p, t = float(probability), float(threshold)
    p_digits, t_digits = (2 if abs(p - t) >= 0.005 else 3), 3
    while True:
        p_text, t_text = f"{p:.{p_digits}f}", f"{t:.{t_digits}f}"
        if (float(p_text) >= float(t_text)) == (p >= t) or t_digits >= 8:
            return p_text, t_text
        p_digits = t_digits = t_digits + 1


def display_spectrogram(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dB [F, T], centre frequencies [F] Hz, frame times [T] s)`` of the display grid.

    One-window :class:`~steth_hub.features.MultiWindowLogMel` (64 ms Hann, 10 ms hop, 128 Slaney
    mel bands from 0 Hz to 8 kHz or half the sample rate, 80 dB range): the same code as the
    DenseNet features, with a window long enough to resolve wheezes below 1 kHz.
    """
    import torch

    from steth_hub.features import MultiWindowLogMel

    f_max = min(DISPLAY_MAX_HZ, sample_rate / 2.0)
    fx = MultiWindowLogMel(sample_rate=int(sample_rate), windows_ms=(DISPLAY_WINDOW_MS,), hop_ms=DISPLAY_HOP_MS,
                           n_mels=DISPLAY_MELS, f_min=0.0, f_max=f_max, device="cpu")
    x = np.asarray(samples, dtype=np.float32)
    if len(x) <= fx.n_fft // 2:  # far shorter than any clip; pad so the picture still draws
        x = np.pad(x, (0, fx.n_fft // 2 + 1 - len(x)))
    with torch.no_grad():
        db = fx(x[None, :], int(sample_rate))[0, 0].cpu().numpy().astype(np.float32)
    times = np.arange(db.shape[1]) * fx.hop / float(sample_rate)
    return db, mel_centres(DISPLAY_MELS, 0.0, f_max, "slaney"), times


def interp_matrix(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``W [len(new), len(old)]`` so that ``W @ values`` interpolates linearly (edge values held)."""
    new = np.asarray(new, dtype=np.float64)
    old = np.asarray(old, dtype=np.float64)
    w = np.zeros((len(new), len(old)), dtype=np.float64)
    if len(old) == 1:
        w[:, 0] = 1.0
        return w
    hi = np.clip(np.searchsorted(old, new), 1, len(old) - 1)
    lo = hi - 1
    frac = np.clip((new - old[lo]) / (old[hi] - old[lo]), 0.0, 1.0)
    rows = np.arange(len(new))
    w[rows, lo] = 1.0 - frac
    w[rows, hi] += frac
    return w


def place_maps(clip_maps: ClipMaps, clip_starts, clip_seconds, times: np.ndarray,
               frequencies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put every clip's map on the display grid; returns ``(map [F, T], coverage [T])``.

    Each clip's map is scaled to a maximum of 1, interpolated in frequency (linearly in mel)
    from its rows onto ``frequencies`` (0 beyond one row spacing outside the rows: a front end
    that stops at 2 kHz says nothing about 4 kHz) and in time onto the display columns that fall inside
    both the clip and the part of it the model saw (``clip_maps.times``, less padding).
    Overlapping clips are averaged; ``coverage`` counts the clips over each column (0: no
    clip, the map is 0 there). The result is scaled to a maximum of 1 (all zeros stays zeros).
    """
    times = np.asarray(times, dtype=np.float64)
    frequencies = np.asarray(frequencies, dtype=np.float64)
    starts = np.broadcast_to(np.asarray(clip_starts, dtype=np.float64), (len(clip_maps),))
    seconds = np.broadcast_to(np.asarray(clip_seconds, dtype=np.float64), (len(clip_maps),))
    total = np.zeros((len(frequencies), len(times)), dtype=np.float64)
    coverage = np.zeros(len(times), dtype=np.float64)
    display_mel, grid_mel = hz_to_mel(frequencies, "htk"), hz_to_mel(clip_maps.frequencies, "htk")
    w_freq = interp_matrix(display_mel, grid_mel)
    if len(grid_mel) > 1:  # a row stands for the band up to its neighbours: nothing is placed beyond the grid's edges
        band = float(np.median(np.diff(grid_mel)))
        w_freq[(display_mel < grid_mel[0] - band - 1e-9) | (display_mel > grid_mel[-1] + band + 1e-9)] = 0.0
    step = float(np.median(np.diff(clip_maps.times))) if len(clip_maps.times) > 1 else float(seconds.max())
    for m, start, length in zip(clip_maps.maps, starts, seconds):
        seen = clip_maps.times <= length + 1e-9  # columns inside the clip (not padding)
        if not seen.any():
            continue
        t_seen = clip_maps.times[seen]
        # a frame stands for the step around it; the clip's edges are within one step of its frames
        first = max(0.0, t_seen[0] - step)
        last = min(length, t_seen[-1] + step)
        columns = np.flatnonzero((times >= start + first - 1e-9) & (times <= start + last + 1e-9))
        if not len(columns):
            continue
        values = m[:, seen].astype(np.float64)
        peak = values.max()
        if peak > 0:
            values = values / peak
        w_time = interp_matrix(times[columns] - start, t_seen)
        total[:, columns] += w_freq @ values @ w_time.T
        coverage[columns] += 1.0
    placed = np.divide(total, coverage[None, :], out=np.zeros_like(total), where=coverage[None, :] > 0)
    peak = placed.max()
    if peak > 0:
        placed /= peak
    return placed.astype(np.float32), coverage.astype(np.float32)


def _display_waveform(recording, clips, rate: int) -> np.ndarray:
    """The preprocessed recording: the clips put back at their start times (averaged where they
    overlap); stretches no clip covers come from the decoded recording at the clips' level."""
    raw = recording.resampled(rate).samples.astype(np.float64)
    ends = [int(round(c.start * rate)) + len(c.samples) for c in clips]
    n = max([len(raw)] + ends)
    total = np.zeros(n)
    count = np.zeros(n)
    for clip in clips:
        i = max(0, int(round(clip.start * rate)))
        total[i:i + len(clip.samples)] += clip.samples[:n - i]
        count[i:i + len(clip.samples)] += 1
    out = np.zeros(n)
    out[:len(raw)] = raw
    covered = count > 0
    if covered.any() and not covered.all():
        mean = total[covered] / count[covered]
        raw_level = np.sqrt(np.mean(out[covered] ** 2))
        if raw_level > 0:
            out *= np.sqrt(np.mean(mean ** 2)) / raw_level
    out[covered] = total[covered] / count[covered]
    return out.astype(np.float32)


def band_limit(recording, classifier) -> float:
    """The highest frequency the clips can hold: half the file's sample rate, the preset's
    ``bandlimit``, or half the model's sample rate, whichever is lowest."""
    limits = [recording.original_sample_rate / 2.0, classifier.sample_rate / 2.0]
    from steth_hub.preprocess import load_preset

    try:
        preset = load_preset(classifier.preset or None)
        limits += [float(p["max_hz"]) for name, p in preset.steps if name == "bandlimit" and p.get("max_hz")]
    except Exception:  # a preset the screening already accepted; the limit is a label only
        pass
    return float(min(limits))


# =========================================================================== the result
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


#: frequencies labelled on the picture's mel-spaced axis
_HZ_TICKS = (0, 250, 500, 1000, 2000, 4000, 8000, 16000)


def draw(explanation: Explanation):
    """Draw an explanation: the spectrogram, the spectrogram with the map, and P(asthma) per clip.

    Frequency is drawn on a mel axis (as the models see it) labelled in Hz; time in seconds.
    The band above ``band_limit_hz`` is hatched and labelled, columns no clip covers are shaded.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    e = explanation
    # the rows are mel bands evenly spaced in Slaney mel: the axis runs one step beyond the outer centres
    mels = hz_to_mel(e.frequencies, "slaney")
    step = float(mels[-1] - mels[-2]) if len(mels) > 1 else 1.0
    mel_lo, mel_hi = float(mels[0] - step), float(mels[-1] + step)
    f_max = float(mel_to_hz(mel_hi, "slaney"))
    hop = float(np.median(np.diff(e.times))) if len(e.times) > 1 else DISPLAY_HOP_MS / 1000.0
    extent = (float(e.times[0]) - hop / 2, float(e.times[-1]) + hop / 2, mel_lo, mel_hi)
    width = float(np.clip(4.0 + 0.8 * e.duration, 9.0, 16.0))

    # a bare Figure (Agg canvas), not pyplot: no global state, safe in a web server's threads
    fig = Figure(figsize=(width, 8.2), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[3, 3, 1.3], width_ratios=[50, 1])
    ax_spec = fig.add_subplot(grid[0, 0])
    ax_map = fig.add_subplot(grid[1, 0], sharex=ax_spec, sharey=ax_spec)
    ax_prob = fig.add_subplot(grid[2, 0], sharex=ax_spec)
    cax_spec, cax_map = fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1])

    spec = e.spectrogram
    vmin, vmax = float(np.percentile(spec, 2)), float(spec.max())
    im = ax_spec.imshow(spec, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=vmin, vmax=vmax,
                        interpolation="nearest")
    fig.colorbar(im, cax=cax_spec, label="power (dB)")
    ax_spec.set_title("log-mel spectrogram of the preprocessed recording", fontsize=10, loc="left")

    ax_map.imshow(spec, origin="lower", aspect="auto", extent=extent, cmap="gray", vmin=vmin, vmax=vmax,
                  interpolation="nearest")
    cmap = colormaps["turbo"]
    rgba = cmap(np.clip(e.map, 0.0, 1.0))
    rgba[..., 3] = 0.15 + 0.7 * np.clip(e.map, 0.0, 1.0)
    rgba[:, e.coverage <= 0, 3] = 0.0
    ax_map.imshow(rgba, origin="lower", aspect="auto", extent=extent, interpolation="bilinear")
    what = "asthma" if e.target == "asthma" else "not asthma"
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), cax=cax_map, label="relative importance")
    ax_map.set_title(f"where the model looked ({e.explainer}): evidence for {what}", fontsize=10, loc="left")

    for ax in (ax_spec, ax_map):
        if e.band_limit_hz < f_max - 1:
            band = float(hz_to_mel(e.band_limit_hz, "slaney"))
            ax.axhspan(band, mel_hi, facecolor=(0.5, 0.5, 0.5, 0.45), edgecolor="white", hatch="//", linewidth=0)
            ax.text(extent[0] + 0.01 * (extent[1] - extent[0]), (band + mel_hi) / 2,
                    f"empty band: nothing above {e.band_limit_hz:.0f} Hz in this recording",
                    color="white", fontsize=9, va="center",
                    bbox={"facecolor": "black", "alpha": 0.5, "edgecolor": "none", "pad": 2})
        for start, end in _uncovered_spans(e.times, e.coverage, hop):
            ax.axvspan(start, end, facecolor=(0.6, 0.6, 0.6, 0.55), edgecolor="none")
            if end - start >= 0.04 * (extent[1] - extent[0]):
                ax.text((start + end) / 2, mel_lo + 0.04 * (mel_hi - mel_lo), "not\nanalysed", ha="center",
                        fontsize=7, color="black")
        ticks = [f for f in _HZ_TICKS if f <= f_max]
        ax.set_yticks([float(hz_to_mel(f, "slaney")) for f in ticks], [f"{f:g}" for f in ticks])
        ax.set_ylabel("frequency (Hz)")
        ax.set_ylim(mel_lo, mel_hi)
        ax.tick_params(labelbottom=False)

    for start, length, p in zip(e.clip_starts, e.clip_seconds, e.clip_probabilities):
        colour = "tab:red" if p >= e.threshold else "tab:blue"
        ax_prob.hlines(p, start, start + length, colors=colour, linewidth=3, alpha=0.8)
    ax_prob.axhline(e.threshold, color="black", linestyle="--", linewidth=1)
    ax_prob.text(extent[1], e.threshold, f" threshold {e.threshold:.3f}", va="center", fontsize=8)
    ax_prob.set_ylim(-0.02, 1.02)
    ax_prob.set_ylabel("P(asthma)\nper clip")
    ax_prob.set_xlabel("time (s)")
    ax_prob.set_xlim(extent[0], extent[1])

    name = Path(e.source).name if e.source not in (None, "", "<array>", "<bytes>") else (e.source or "<array>")
    verdict = "asthma suspected" if e.decision else "asthma not suspected"
    shown_p, shown_t = decision_numbers(e.probability, e.threshold)
    fig.suptitle(f"{name}  |  model: {e.model}\n"
                 f"P(asthma) = {shown_p}: {verdict} at threshold {shown_t}  |  "
                 f"{DISCLAIMER}", fontsize=11)
    return fig


def _uncovered_spans(times: np.ndarray, coverage: np.ndarray, hop: float) -> list[tuple[float, float]]:
    spans, start = [], None
    for t, c in zip(times, coverage):
        if c <= 0 and start is None:
            start = t - hop / 2
        elif c > 0 and start is not None:
            spans.append((start, t - hop / 2))
            start = None
    if start is not None:
        spans.append((start, float(times[-1]) + hop / 2))
    return spans


# =========================================================================== the API
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
                                     screening.ScreeningPipeline(classifier))
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
