"""Where clipping is detected: a recording whose peaks were cut off by the recorder.

A clipped recording has flat tops: when the signal exceeded the recorder's range, runs
of consecutive samples sit at the same extreme value. Such a recording carries
distortion a model could learn, so the preprocessing step :class:`ClippingCheck`
rejects it (``RecordingRejected(code="clipped")``).

Three measures are available (``method``), each a share of the recording's samples:

``plateau`` (the default)
    samples lying in runs of at least ``min_run`` consecutive samples within ``tolerance``
    (relative) of the recording's positive or negative peak. It detects clipping wherever
    it happened (at full scale, or before a later gain change), and ignores a single
    sample at a peak-normalised maximum. Rejects above 0.1 % of samples.
``full-scale``
    samples at or above ``level`` of digital full scale (|x| >= 0.999). Only meaningful
    for recordings that were never rescaled after clipping. Rejects above 0.1 %.
``paper-p95``
    the paper's rule: samples at or above the 95th percentile of |x|, rejected above 2 %.
    It cannot work: for any signal about 5 % of samples lie at or above their own 95th
    percentile, so it rejects every recording. It is kept, as the paper's, so that this
    can be shown (``tests/test_clipping.py`` does, on the real recordings).

On the shared recordings, ``plateau`` flags no KAUH recording and four of the 42 ICBHI
excerpts, which are really clipped (runs of up to 462 samples at full scale); the same
recordings amplified 2-10x and clipped at full scale on purpose are all flagged (see
docs/preprocessing.md for the figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steth_hub.errors import ConfigError, RecordingRejected

#: rejection threshold (share of samples) of each method
DEFAULT_MAX_SHARE: dict[str, float] = {"plateau": 0.001, "full-scale": 0.001, "paper-p95": 0.02}
#: the parameters each method takes besides ``max_share``, with their defaults
METHOD_PARAMS: dict[str, dict[str, float]] = {
    "plateau": {"min_run": 3, "tolerance": 1e-4},
    "full-scale": {"level": 0.999},
    "paper-p95": {"percentile": 95.0},
}
METHODS = tuple(METHOD_PARAMS)


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a boolean array."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def plateau_share(samples: np.ndarray, *, min_run: int = 3, tolerance: float = 1e-4) -> float:
    """Share of samples on flat tops: runs of >= ``min_run`` samples within ``tolerance`` of a peak.

    The positive and the negative peak are checked separately, so a recorder that clips
    one polarity only is caught too.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.size == 0:
        return 0.0
    on_plateau = 0
    for peak, extreme in ((float(x.max()), lambda p: x >= p), (float(x.min()), lambda p: x <= p)):
        if peak == 0.0:
            continue
        runs = _run_lengths(extreme(peak * (1.0 - tolerance)))
        on_plateau += int(runs[runs >= int(min_run)].sum())
    return on_plateau / float(x.size)


def full_scale_share(samples: np.ndarray, *, level: float = 0.999) -> float:
    """Share of samples with |x| at or above ``level`` of digital full scale (1.0)."""
    x = np.abs(np.asarray(samples, dtype=np.float32))
    return float(np.count_nonzero(x >= level)) / max(1, x.size)


def paper_p95_share(samples: np.ndarray, *, percentile: float = 95.0) -> float:
    """The paper's measure: share of samples with |x| at or above the ``percentile`` of |x|.

    About ``1 - percentile/100`` for every signal (5 % for the default), which is why the
    paper's 2 % threshold rejects everything.
    """
    x = np.abs(np.asarray(samples, dtype=np.float32))
    if x.size == 0:
        return 0.0
    return float(np.count_nonzero(x >= np.percentile(x, percentile))) / x.size


_MEASURES = {"plateau": plateau_share, "full-scale": full_scale_share, "paper-p95": paper_p95_share}


@dataclass(frozen=True)
class ClippingResult:
    """One recording's verdict: the measure, its value, the threshold and whether it is clipped."""

    method: str
    share: float
    max_share: float
    clipped: bool

    def describe(self) -> str:
        verdict = "clipped" if self.clipped else "not clipped"
        return (f"{verdict}: {100 * self.share:.3f}% of samples by the {self.method} measure "
                f"(threshold {100 * self.max_share:.3f}%)")


def check_method(method: str, params: dict | None = None) -> dict:
    """The full parameter set of ``method`` (defaults filled in); unknown names raise ``ConfigError``."""
    if method not in METHOD_PARAMS:
        raise ConfigError(f"unknown clipping method {method!r}",
                          fix=f"use one of: {', '.join(METHODS)} (plateau is the working default)")
    given = {k: v for k, v in (params or {}).items() if v is not None}
    allowed = set(METHOD_PARAMS[method]) | {"max_share"}
    wrong = sorted(set(given) - allowed)
    if wrong:
        raise ConfigError(f"clipping method {method!r} takes no parameter(s) {', '.join(wrong)}",
                          fix=f"{method} takes: {', '.join(sorted(allowed))}")
    resolved = {"max_share": float(given.get("max_share", DEFAULT_MAX_SHARE[method]))}
    for name, default in METHOD_PARAMS[method].items():
        resolved[name] = type(default)(given.get(name, default))
    if not 0.0 <= resolved["max_share"] <= 1.0:
        raise ConfigError(f"max_share must be a share between 0 and 1, got {resolved['max_share']}",
                          fix="for example max_share: 0.001 (0.1 % of samples)")
    return resolved


def detect_clipping(samples: np.ndarray, method: str = "plateau", **params) -> ClippingResult:
    """Measure clipping in ``samples`` with ``method``; ``params`` override the method's defaults."""
    resolved = check_method(method, params)
    max_share = resolved.pop("max_share")
    share = float(_MEASURES[method](samples, **resolved))
    return ClippingResult(method=method, share=share, max_share=max_share, clipped=share > max_share)


def simulate_clipping(samples: np.ndarray, gain: float, *, bits: int | None = 16) -> np.ndarray:
    """What an overdriven recorder makes of ``samples``: amplified to ``gain`` times full scale
    (relative to the recording's own peak), cut at +-1 and quantised to ``bits``.

    Used to check that a detector catches real clipping on real recordings.
    """
    x = np.asarray(samples, dtype=np.float64)
    peak = float(np.max(np.abs(x))) or 1.0
    y = np.clip(x / peak * float(gain), -1.0, 1.0)
    if bits:
        scale = float(2 ** (int(bits) - 1) - 1)
        y = np.round(y * scale) / scale
    return y.astype(np.float32)


class ClippingCheck:
    """Preprocessing step ``clipping``: reject a recording whose clips are clipped.

    Args:
        method: ``plateau`` (default), ``full-scale`` or ``paper-p95`` (the paper's rule,
            which rejects everything; see the module docstring).
        max_share: reject above this share of samples (default depends on the method).
        min_run, tolerance: ``plateau`` settings. level: ``full-scale`` setting.
        percentile: ``paper-p95`` setting.
    """

    def __init__(self, method: str = "plateau", max_share: float | None = None, min_run: int | None = None,
                 tolerance: float | None = None, level: float | None = None, percentile: float | None = None):
        self.method = method
        self.params = {"method": method, **check_method(method, {
            "max_share": max_share, "min_run": min_run, "tolerance": tolerance, "level": level,
            "percentile": percentile})}

    def __call__(self, clips: list) -> list:
        settings = {k: v for k, v in self.params.items() if k != "method"}
        for clip in clips:
            result = detect_clipping(clip.samples, self.method, **settings)
            if result.clipped:
                raise RecordingRejected(
                    result.describe(), path=clip.recording_id, code="clipped",
                    fix="record again with a lower input gain (or set a higher clipping max_share in the preset)")
        return clips

    def __repr__(self) -> str:
        return f"ClippingCheck({self.params})"
