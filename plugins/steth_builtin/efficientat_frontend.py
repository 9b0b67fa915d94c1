"""Where a clip becomes EfficientAT's input: its published log-mel front end, in numpy only.

EfficientAT's ``AugmentMelSTFT`` in evaluation mode (Schmid, Koutini, Widmer, ICASSP 2023),
reproduced step by step so the AudioSet-pretrained MobileNets see what they were trained on:

1. mono at 32 kHz (clips at another rate are resampled with soxr);
2. pre-emphasis as a valid 2-tap convolution: ``y[n] = x[n + 1] - 0.97 x[n]`` (one sample shorter);
3. STFT: ``n_fft`` 1024, a 800-sample Hann window (symmetric, i.e. ``periodic=False``) zero-padded to
   the centre of the 1024 frame, hop 320, centred frames (reflect padding of ``n_fft // 2``);
4. power spectrum ``re^2 + im^2``;
5. 128 Kaldi-style mel triangles (mel = 1127 ln(1 + f / 700), triangles in mel space, Kaldi's
   ``get_mel_banks``) from 0 Hz to 15 kHz over the 512 lowest FFT bins, a zero column for the
   Nyquist bin;
6. ``log(mel + 1e-5)``, then ``(x + 4.5) / 5``.

Output ``[N, 1, n_mels, frames]`` float32, ``frames = 1 + (samples_at_32k - 1) // hop``.
Importing this module imports numpy (and soxr when resampling); no torch, so the light ONNX
runtime can use it. Registered as the feature extractor ``efficientat-mel``.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 32000
N_FFT = 1024
WIN_LENGTH = 800
HOP = 320
N_MELS = 128
F_MIN = 0.0
F_MAX = 15000.0
PREEMPHASIS = 0.97
LOG_OFFSET = 1e-5


def kaldi_mel(f):
    """Kaldi's mel scale, ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=8)
def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` triangles as Kaldi's ``get_mel_banks`` builds them (plus a zero Nyquist column)."""
    n_bins = n_fft // 2
    bin_width = sample_rate / n_fft
    mel_low, mel_high = kaldi_mel(f_min), kaldi_mel(f_max)
    delta = (mel_high - mel_low) / (n_mels + 1)
    index = np.arange(n_mels, dtype=np.float64)[:, None]
    left, centre, right = mel_low + index * delta, mel_low + (index + 1) * delta, mel_low + (index + 2) * delta
    mel = kaldi_mel(bin_width * np.arange(n_bins, dtype=np.float64))[None, :]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


def band_centres(n_mels: int = N_MELS, f_min: float = F_MIN, f_max: float = F_MAX) -> np.ndarray:
    """Centre frequency (Hz) of each mel band: where the explainer maps of a row belong."""
    mel_low, mel_high = kaldi_mel(f_min), kaldi_mel(f_max)
    centres = mel_low + (np.arange(n_mels) + 1) * (mel_high - mel_low) / (n_mels + 1)
    return (700.0 * np.expm1(centres / 1127.0)).astype(np.float64)


@functools.lru_cache(maxsize=4)
def _window(n_fft: int, win_length: int) -> np.ndarray:
    window = np.zeros(n_fft, dtype=np.float64)
    left = (n_fft - win_length) // 2
    window[left:left + win_length] = np.hanning(win_length)  # symmetric Hann = torch periodic=False
    return window


class EfficientATMel:
    """``extractor(waveforms [N, S], sample_rate) -> float32 [N, 1, n_mels, frames]`` (numpy).

    Settings default to the published front end; ``f_max`` etc. may be changed for experiments
    (a pretrained network expects the defaults).
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, win_length: int = WIN_LENGTH,
                 hop: int = HOP, n_mels: int = N_MELS, f_min: float = F_MIN, f_max: float = F_MAX,
                 preemphasis: float = PREEMPHASIS):
        from steth_hub.errors import ConfigError

        if not (0 <= f_min < f_max <= sample_rate / 2):
            raise ConfigError(f"efficientat-mel needs 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}",
                              fix="use the published 0 and 15000 Hz at 32 kHz")
        if not (0 < win_length <= n_fft) or hop <= 0:
            raise ConfigError(f"efficientat-mel: bad framing n_fft={n_fft} win_length={win_length} hop={hop}",
                              fix="use the published 1024 / 800 / 320")
        self.sample_rate = int(sample_rate)
        self.n_fft, self.win_length, self.hop = int(n_fft), int(win_length), int(hop)
        self.n_mels, self.f_min, self.f_max = int(n_mels), float(f_min), float(f_max)
        self.preemphasis = float(preemphasis)

    def config(self) -> dict:
        return {"sample_rate": self.sample_rate, "n_fft": self.n_fft, "win_length": self.win_length, "hop": self.hop,
                "n_mels": self.n_mels, "f_min": self.f_min, "f_max": self.f_max, "preemphasis": self.preemphasis}

    def n_frames(self, n_samples: int, sample_rate: int) -> int:
        """Frames for a clip of ``n_samples`` at ``sample_rate``."""
        n = int(round(n_samples * self.sample_rate / int(sample_rate)))
        return 1 + (n - 1) // self.hop

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Centre (s) of each frame, in the clip's time: frame ``i`` is centred on sample ``i * hop``."""
        return np.arange(n_frames) * self.hop / float(self.sample_rate)

    def __call__(self, waveforms, sample_rate: int) -> np.ndarray:
        x = np.asarray(waveforms, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if int(sample_rate) != self.sample_rate:
            import soxr

            x = np.stack([soxr.resample(w, int(sample_rate), self.sample_rate, quality="HQ") for w in x])
        x = x.astype(np.float64)
        y = x[:, 1:] - self.preemphasis * x[:, :-1]
        pad = self.n_fft // 2
        if y.shape[1] <= pad:
            from steth_hub.errors import AudioError

            raise AudioError(f"clip too short for the EfficientAT front end ({y.shape[1]} samples)",
                             fix="use clips of at least 0.1 s")
        y = np.pad(y, ((0, 0), (pad, pad)), mode="reflect")
        n_frames = 1 + (y.shape[1] - self.n_fft) // self.hop
        idx = np.arange(self.n_fft)[None, :] + self.hop * np.arange(n_frames)[:, None]
        window = _window(self.n_fft, self.win_length)
        banks = kaldi_mel_banks(self.n_mels, self.n_fft, self.sample_rate, self.f_min, self.f_max).astype(np.float64)
        out = np.empty((len(y), 1, self.n_mels, n_frames), dtype=np.float32)
        for i, row in enumerate(y):
            spectrum = np.fft.rfft(row[idx] * window, n=self.n_fft, axis=-1)
            power = spectrum.real ** 2 + spectrum.imag ** 2          # [frames, n_fft // 2 + 1]
            mel = banks @ power.T                                      # [n_mels, frames]
            out[i, 0] = ((np.log(mel + LOG_OFFSET) + 4.5) / 5.0).astype(np.float32)
        return out
