"""The demo's pictures: the three-window spectrogram (numpy: no torch) and PNGs as arrays."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from steth_hub.audio import Recording


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
