"""The spectrogram a breath-sound diffusion model draws, and the way back to a waveform.

Forward (:meth:`LogMel.encode`): a 4 kHz waveform -> STFT (Hann window of 512 samples = 128 ms,
hop 256 = 64 ms) -> power -> 40 triangular mel bands (HTK mel scale, 20-2000 Hz) -> natural log
of (mel + 1e-5): a 5 s clip is a 40 x 79 image, small enough to train a diffusion model on two
CPU cores. The corpus's clips hold nothing above 2 kHz (the ``excerpt-10s`` preset
band-limits them), so 4 kHz loses nothing.

Back (:meth:`LogMel.decode`): exp -> a non-negative linear-frequency power spectrogram that
the mel bands map back onto it (non-negative least squares by multiplicative updates, from the
pseudo-inverse) -> magnitude -> frames interpolated linearly in time to a hop of 64 samples
(87.5 % overlap; Griffin-Lim at the 50 % overlap of the model's frames loses much more) ->
**Griffin-Lim** phase recovery (the "fast" variant with momentum 0.99, Perraudin et al. 2013;
64 iterations, the starting phase drawn from the seeded generator) -> peak-normalised waveform. Griffin-Lim keeps the spectral envelope and timing and
invents the phase; lung sounds are noise-like, so this loses less than it would for speech,
but fine structure (crackle onsets, wheeze harmonics) comes back smeared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular HTK-mel filters ``[n_mels, n_fft // 2 + 1]`` (peak 1, no area normalisation)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bank = np.zeros((n_mels, len(freqs)), dtype=np.float64)
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        bank[m] = np.clip(np.minimum(up, down), 0.0, None)
    return bank.astype(np.float32)


@dataclass(frozen=True)
class SpectralConfig:
    sample_rate: int = 4000
    n_fft: int = 512
    hop: int = 256
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 2000.0
    log_floor: float = 1e-5
    griffin_lim_iters: int = 64
    griffin_lim_momentum: float = 0.99
    #: Griffin-Lim runs at hop / this (frames interpolated linearly in time): 87.5 % overlap instead of 50 %
    griffin_lim_upsample: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SpectralConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def frames(self, seconds: float) -> int:
        """STFT frames (centred) of a clip of ``seconds``."""
        return 1 + int(round(seconds * self.sample_rate)) // self.hop


class LogMel:
    """Waveform <-> log-mel at :class:`SpectralConfig` settings (torch, CPU or GPU)."""

    def __init__(self, config: SpectralConfig | None = None):
        import torch

        self.config = config or SpectralConfig()
        c = self.config
        self.bank = torch.from_numpy(mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax))
        self.window = torch.hann_window(c.n_fft)

    def encode(self, waveforms):
        """float ``[N, S]`` at the config's rate -> log-mel ``[N, n_mels, frames]``."""
        import torch

        c = self.config
        x = torch.as_tensor(np.asarray(waveforms, dtype=np.float32) if not torch.is_tensor(waveforms) else waveforms)
        spec = torch.stft(x, c.n_fft, c.hop, window=self.window.to(x.device), center=True, return_complex=True)
        power = spec.abs() ** 2
        mel = torch.einsum("mf,nft->nmt", self.bank.to(x.device), power)
        return torch.log(mel + c.log_floor)

    def decode(self, logmel, *, generator=None) -> np.ndarray:
        """log-mel ``[N, n_mels, frames]`` -> float32 waveforms ``[N, (frames - 1) * hop]``, peak 0.9."""
        import torch

        c = self.config
        logmel = torch.as_tensor(logmel, dtype=torch.float32)
        mel = torch.exp(logmel) - c.log_floor
        mel = mel.clamp_min(0.0)
        bank = self.bank.to(mel.device)
        # non-negative least squares for the linear power: multiplicative updates from the pseudo-inverse
        power = (torch.linalg.pinv(bank) @ mel).clamp_min(1e-10)
        gram = bank.T @ bank
        target = bank.T @ mel
        for _ in range(30):
            power = power * target / (gram @ power + 1e-12)
        magnitude = power.sqrt()
        up = max(1, int(c.griffin_lim_upsample))
        if up > 1:  # more overlap for the phase search: the frames in between are linear interpolations
            frames = magnitude.shape[-1]
            magnitude = torch.nn.functional.interpolate(magnitude, size=(frames - 1) * up + 1, mode="linear",
                                                        align_corners=True)
        audio = griffin_lim(magnitude, c.n_fft, c.hop // up, self.window.to(mel.device), c.griffin_lim_iters,
                            c.griffin_lim_momentum, generator=generator)
        n = (logmel.shape[-1] - 1) * c.hop
        audio = audio[:, :n].cpu().numpy().astype(np.float32)
        peak = np.abs(audio).max(axis=1, keepdims=True)
        return (0.9 * audio / np.maximum(peak, 1e-8)).astype(np.float32)


def griffin_lim(magnitude, n_fft: int, hop: int, window, n_iter: int = 64, momentum: float = 0.99,
                *, generator=None):
    """Fast Griffin-Lim (Perraudin, Balazs, Sondergaard 2013): a waveform whose STFT magnitude is
    close to ``magnitude`` ``[N, n_fft // 2 + 1, frames]``; the starting phase comes from ``generator``."""
    import torch

    angles = torch.rand(magnitude.shape, generator=generator, device=magnitude.device) * 2 * math.pi
    phase = torch.polar(torch.ones_like(magnitude), angles)
    previous = torch.zeros_like(phase)
    length = (magnitude.shape[-1] - 1) * hop
    for _ in range(max(1, int(n_iter))):
        audio = torch.istft(magnitude * phase, n_fft, hop, window=window, center=True, length=length)
        rebuilt = torch.stft(audio, n_fft, hop, window=window, center=True, return_complex=True)
        accelerated = rebuilt - momentum * previous
        previous = rebuilt
        phase = accelerated / accelerated.abs().clamp_min(1e-8)
    return torch.istft(magnitude * phase, n_fft, hop, window=window, center=True, length=length)
