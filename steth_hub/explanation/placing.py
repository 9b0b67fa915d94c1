"""Placing explanation maps on the spectrogram a person looks at.

The **display grid** is a log-mel spectrogram (128 mel bands, 0 Hz to 8 kHz or half the
model's sample rate, 64 ms window, 10 ms hop) of the preprocessed recording, i.e. the clips
the model saw, put back at their start times. :func:`place_maps` scales each clip's map to a
maximum of 1, interpolates its rows from the model's frequency grid onto the display's
(linearly in mel) and its columns onto the display frames the clip covers; where clips
overlap the maps are averaged, and the result is scaled to a maximum of 1.
"""

from __future__ import annotations

import numpy as np

from steth_hub.display import hz_to_mel, log_mel, mel_centres
from steth_hub.explanation.choosing import ClipMaps

#: the display spectrogram: mel bands, window and hop (ms), and its top frequency
DISPLAY_MELS = 128
DISPLAY_WINDOW_MS = 64.0
DISPLAY_HOP_MS = 10.0
DISPLAY_MAX_HZ = 8000.0


def display_spectrogram(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dB [F, T], centre frequencies [F] Hz, frame times [T] s)`` of the display grid.

    One window of :func:`steth_hub.display.log_mel` (64 ms Hann, 10 ms hop, 128 Slaney mel bands
    from 0 Hz to 8 kHz or half the sample rate, 80 dB range): the numbers of the DenseNet
    features' :class:`~steth_hub.features.MultiWindowLogMel`, in numpy, with a window long enough
    to resolve wheezes below 1 kHz.
    """
    rate = int(sample_rate)
    f_max = min(DISPLAY_MAX_HZ, rate / 2.0)
    db = log_mel(samples, rate, target_rate=rate, windows_ms=(DISPLAY_WINDOW_MS,), hop_ms=DISPLAY_HOP_MS,
                 n_mels=DISPLAY_MELS, f_min=0.0, f_max=f_max)[0]  # short input is padded so a picture draws
    hop = int(round(DISPLAY_HOP_MS * rate / 1000.0))
    times = np.arange(db.shape[1]) * hop / float(rate)
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
