"""What a person looks at: log-mel spectrograms, mel axes and the spectrogram picture, without torch.

The demo draws the three-window log-mel of a whole recording next to its screening result,
and that result comes from the light ONNX runtime (:mod:`steth_hub.runtime`): the picture must
not be what loads torch. :func:`log_mel` computes the same numbers as
:class:`steth_hub.features.MultiWindowLogMel` (centred frames with reflect padding, periodic Hann
windows centred in one FFT size, Slaney mel filters with Slaney area normalisation, 10 log10
of power, ``top_db`` below each spectrogram's maximum) with numpy's FFT, frame chunk by frame
chunk so a long recording needs bounded memory. ``tests/test_display.py`` checks it against
the torch extractor and the mel scales against transformers'.

:func:`hz_to_mel` / :func:`mel_to_hz` are the Slaney, HTK and Kaldi mel scales as
transformers computes them; :func:`mel_filter_bank` is transformers'
``mel_filter_bank(..., norm="slaney")`` (the filters librosa computes). :func:`spectrogram_image`
draws the three windows of a whole recording (matplotlib, imported when drawing), for the demo
and the clinician's report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from steth_hub.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from steth_hub.audio import Recording

#: mel scales :func:`hz_to_mel` knows
MEL_SCALES = ("slaney", "htk", "kaldi")
#: frames computed together (memory: frames x windows x n_fft floats)
_CHUNK_FRAMES = 256


def _scale(scale: str) -> str:
    if scale not in MEL_SCALES:
        raise ConfigError(f"unknown mel scale {scale!r}", fix=f"use one of: {', '.join(MEL_SCALES)}")
    return scale


def hz_to_mel(hz, scale: str = "slaney"):
    """Hz to mel on the given scale (``"slaney"``, ``"htk"`` or ``"kaldi"``), as transformers computes it."""
    scale = _scale(scale)
    f = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale == "kaldi":
        return 1127.0 * np.log(1.0 + f / 700.0)
    linear = 3.0 * f / 200.0
    logged = 15.0 + np.log(np.maximum(f, 1e-300) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(f >= 1000.0, logged, linear)


def mel_to_hz(mel, scale: str = "slaney"):
    """Mel to Hz, the inverse of :func:`hz_to_mel`."""
    scale = _scale(scale)
    m = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (np.power(10.0, m / 2595.0) - 1.0)
    if scale == "kaldi":
        return 700.0 * (np.exp(m / 1127.0) - 1.0)
    linear = 200.0 * m / 3.0
    logged = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, logged, linear)


def mel_filter_bank(n_bins: int, n_mels: int, f_min: float, f_max: float, sample_rate: int) -> np.ndarray:
    """Triangular Slaney-scale mel filters with Slaney area normalisation, ``[n_bins, n_mels]`` float32."""
    points = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), int(n_mels) + 2))
    fft_freqs = np.linspace(0, int(sample_rate) // 2, int(n_bins))
    slopes = points[None, :] - fft_freqs[:, None]
    diff = np.diff(points)
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up)).astype(np.float32)
    return filters * (2.0 / (points[2:] - points[:-2]))[None, :].astype(np.float32)


def mel_centres(n_mels: int, f_min: float, f_max: float, scale: str = "slaney") -> np.ndarray:
    """Centre frequency (Hz) of each of ``n_mels`` triangular filters spread evenly in mel from f_min to f_max."""
    points = np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), int(n_mels) + 2)
    return np.asarray(mel_to_hz(points[1:-1], scale), dtype=np.float64)


def log_mel(samples, sample_rate: int, *, target_rate: int = 16000, windows_ms: Sequence[float] = (25, 100, 175),
            hop_ms: float = 10.0, n_mels: int = 128, f_min: float = 0.0, f_max: float = 8000.0,
            top_db: float | None = 80.0, amin: float = 1e-10) -> np.ndarray:
    """Log-mel spectrograms of one recording, one per window: ``[len(windows_ms), n_mels, T]`` (dB, float32).

    The recording is resampled to ``target_rate`` (soxr) first; ``T = 1 + S // hop`` frames,
    centred, with reflect padding; the FFT size is the longest window. The defaults are
    :class:`steth_hub.features.MultiWindowLogMel`'s (25/100/175 ms, 10 ms hop, 128 bands over 0-8 kHz).
    """
    from steth_hub.audio import resample

    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if int(sample_rate) != int(target_rate):
        x = np.asarray(resample(x, int(sample_rate), int(target_rate)), dtype=np.float32)
    rate = int(target_rate)
    if not 0 <= f_min < f_max <= rate / 2:
        raise ConfigError(f"mel range {f_min:g}-{f_max:g} Hz does not fit sample rate {rate}",
                          fix=f"use 0 <= f_min < f_max <= {rate // 2}")
    win_lengths = [int(round(float(w) * rate / 1000.0)) for w in windows_ms]
    hop = int(round(float(hop_ms) * rate / 1000.0))
    n_fft = max(win_lengths)
    half = n_fft // 2
    if len(x) <= half:  # far shorter than any clip; pad so a picture still draws
        x = np.pad(x, (0, half + 1 - len(x)))
    n_bins = n_fft // 2 + 1
    filters = mel_filter_bank(n_bins, n_mels, f_min, f_max, rate)
    windows = np.zeros((len(win_lengths), n_fft), dtype=np.float32)
    for k, wl in enumerate(win_lengths):  # periodic Hann, centred in n_fft (as torch.stft and librosa)
        left = (n_fft - wl) // 2
        windows[k, left:left + wl] = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(wl) / wl)
    padded = np.pad(x, (half, half), mode="reflect")
    frames_total = 1 + len(x) // hop
    framed = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:frames_total]  # a view
    mel = np.empty((len(win_lengths), frames_total, n_mels), dtype=np.float32)
    for t in range(0, frames_total, _CHUNK_FRAMES):
        chunk = framed[t:t + _CHUNK_FRAMES]
        spectra = np.fft.rfft(chunk[None, :, :] * windows[:, None, :], axis=-1)
        power = (spectra.real ** 2 + spectra.imag ** 2).astype(np.float32)
        mel[:, t:t + len(chunk)] = power @ filters
    db = 10.0 * np.log10(np.maximum(mel, amin))
    if top_db is not None:
        db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - float(top_db))
    return np.ascontiguousarray(db.transpose(0, 2, 1), dtype=np.float32)


#: the spectrogram's windows (ms) and band (Hz): MultiWindowLogMel's, the three windows the models use
SPECTROGRAM_WINDOWS_MS = (25.0, 100.0, 175.0)
SPECTROGRAM_BAND_HZ = (0.0, 8000.0)


def spectrogram_image(recording: "Recording") -> np.ndarray:
    """The three-window log-mel of the whole recording: 3 stacked panels, time in s, frequency in Hz.

    Computed in numpy (:func:`log_mel`, the numbers of :class:`~steth_hub.features.MultiWindowLogMel`):
    drawing it imports no torch. The demo and the clinician's report show it.
    """
    f_min, f_max = SPECTROGRAM_BAND_HZ
    mel = log_mel(recording.samples, recording.sample_rate, windows_ms=SPECTROGRAM_WINDOWS_MS, f_min=f_min,
                  f_max=f_max)  # resampled to 16 kHz, 128 mel bands, 10 ms hop
    return _draw_panels(mel, [f"{w:g} ms window" for w in SPECTROGRAM_WINDOWS_MS], recording.duration,
                        f_min, f_max, colorbar="dB", title="Log-mel spectrogram (the three windows the models use)")


def _draw_panels(images: np.ndarray, titles: list[str], duration: float, f_min: float, f_max: float, *,
                 colorbar: str, title: str) -> np.ndarray:
    """Stacked mel-frequency panels as an RGB array; the y axis is labelled in Hz on the mel scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
