"""Drawing an explanation: the spectrogram, the map over it and P(asthma) per clip, on a bare
matplotlib ``Figure`` (Agg canvas), never through pyplot's global state."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from steth_hub.display import hz_to_mel, mel_to_hz
from steth_hub.explanation.placing import DISPLAY_HOP_MS

if TYPE_CHECKING:  # pragma: no cover
    from steth_hub.explanation import Explanation

DISCLAIMER = "screening support, not a diagnosis"


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


#: frequencies labelled on the picture's mel-spaced axis
_HZ_TICKS = (0, 250, 500, 1000, 2000, 4000, 8000, 16000)


def draw(explanation: "Explanation"):
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
