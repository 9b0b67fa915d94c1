"""Where clips become features: multi-window log-mel, the AST front end, and the feature cache.

Feature extractors are called as ``extractor(waveforms, sample_rate) -> torch.Tensor`` for
a batch ``[N, S]`` of clips (numpy or torch):

:class:`MultiWindowLogMel` (plugin ``multiwindow-logmel``)
    three log-mel spectrograms of each clip, with STFT windows of 25, 100 and 175 ms, one
    hop (10 ms) and one FFT size (the longest window, so every window sees the same
    frequency grid and one mel filterbank serves all three), 128 mel bands over 0-8 kHz,
    stacked as ``[N, 3, 128, T]``. Values are decibels of power, clamped at ``top_db`` (80)
    below each spectrogram's maximum, exactly as ``librosa.power_to_db(..., top_db=80)``.
    Runs batched on CPU or CUDA (``device``). Each mel band only touches the FFT bins under
    its triangle, so the filterbank is applied in blocks of 16 bands over the bins they touch,
    not as a dense matrix: 3.8 times fewer multiply-adds for the same numbers. The windowed
    frames are written into a buffer whose zeros (outside each window) are set once per call.
    About 5-11x the throughput of librosa on CPU (bench/bench_features.py).

:class:`ASTFrontEnd` (plugin ``ast-fbank``)
    transformers' ``ASTFeatureExtractor`` (its numpy path: no torchaudio), ``[N, T, 128]``.

:class:`NumpyASTFrontEnd` (plugin ``ast-fbank-numpy``)
    the same filter banks in numpy alone (returns numpy, imports neither torch nor
    transformers): the front end of the light ONNX screening runtime.

Recordings sampled at 4 kHz carry nothing above 2 kHz. After resampling to 16 kHz their
mel bands above about 2 kHz hold (almost) no power; they come out at the floor
(``max - top_db``) of their spectrogram: finite numbers, never NaN or -inf (the power is
clamped at ``amin`` before the logarithm). ``tests/test_features.py`` checks this on a real
4 kHz recording.

:func:`corpus_features` computes the features of a corpus's preprocessed clips once and
keeps them with the corpus (``CORPUS/features/<preset>/<extractor>/``), keyed by the
corpus, the preset and the extractor's settings.

Importing this module does not import torch or transformers; building an extractor does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from steth_hub.clips import clip_batch
from steth_hub.errors import ConfigError, CorpusError

log = logging.getLogger(__name__)

#: bands per block when the mel filterbank is applied block-sparsely
_BANDS_PER_BLOCK = 16
#: at most this many frames (10.24 s at a 10 ms hop) are computed at once, so long recordings
#: (the demo draws whole ones) need bounded memory
_MAX_CHUNK_FRAMES = 1024


def _as_batch(waveforms):
    """A 2-D float32 tensor (on the input's device); a single clip ``[S]`` becomes ``[1, S]``."""
    import torch

    if isinstance(waveforms, torch.Tensor):
        x = waveforms
    else:
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(waveforms, dtype=np.float32)))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ConfigError(f"expected waveforms [N, S] (or one clip [S]), got shape {tuple(x.shape)}",
                          fix="stack equal-length clips into one 2-D array")
    return x.to(torch.float32)


def _resampled(x, from_rate: int, to_rate: int):
    """Rows of a CPU/CUDA tensor resampled with soxr (steth_hub.audio.resample), back on its device."""
    import torch

    from steth_hub.audio import resample

    rows = [resample(row, from_rate, to_rate) for row in x.detach().cpu().numpy()]
    return torch.from_numpy(np.stack(rows)).to(x.device)


class MultiWindowLogMel:
    """Multi-window log-mel spectrogram: ``[N, S]`` clips -> ``[N, len(windows_ms), n_mels, T]`` (dB).

    Args:
        sample_rate: the rate the clips must have; others are resampled (soxr) first.
        windows_ms: STFT window lengths (Hann) in milliseconds.
        hop_ms: the one hop shared by every window; ``T = 1 + S // hop`` (frames centred, reflect padding).
        n_mels, f_min, f_max: mel filterbank (Slaney scale and area normalisation, as librosa's default).
        n_fft: FFT size; default the longest window, so all windows share one frequency grid.
        top_db: dynamic range kept below each spectrogram's maximum (None: no clamp).
        amin: power floor before the logarithm.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"`` (CUDA when available) or None (the
            input tensor's device; CPU for numpy input).
        batch_size, chunk_frames: clips and frames computed together (None: 4 clips on CPU, whose
            caches favour a small working set, 32 on CUDA; at most 1024 frames). They set memory use
            and speed; the results do not depend on them.
    """

    name = "multiwindow-logmel"

    def __init__(self, sample_rate: int = 16000, windows_ms: Sequence[float] = (25, 100, 175), hop_ms: float = 10,
                 n_mels: int = 128, f_min: float = 0.0, f_max: float = 8000.0, n_fft: int | None = None,
                 top_db: float | None = 80.0, amin: float = 1e-10, device: str | None = None,
                 batch_size: int | None = None, chunk_frames: int | None = None):
        import torch

        self.sample_rate = int(sample_rate)
        self.windows_ms = tuple(float(w) for w in windows_ms)
        self.hop_ms = float(hop_ms)
        self.n_mels = int(n_mels)
        self.f_min, self.f_max = float(f_min), float(f_max)
        self.top_db = None if top_db is None else float(top_db)
        self.amin = float(amin)
        self.device = device
        self.batch_size = None if batch_size is None else max(1, int(batch_size))
        self.chunk_frames = None if chunk_frames is None else max(1, int(chunk_frames))
        if not self.windows_ms:
            raise ConfigError("MultiWindowLogMel needs at least one window", fix="e.g. windows_ms=(25, 100, 175)")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ConfigError(f"mel range {self.f_min:g}-{self.f_max:g} Hz does not fit sample rate {self.sample_rate}",
                              fix=f"use 0 <= f_min < f_max <= {self.sample_rate // 2} (half the sample rate)")
        self.win_lengths = [int(round(w * self.sample_rate / 1000.0)) for w in self.windows_ms]
        self.hop = int(round(self.hop_ms * self.sample_rate / 1000.0))
        self.n_fft = int(n_fft) if n_fft is not None else max(self.win_lengths)
        if self.hop < 1 or min(self.win_lengths) < 2 or self.n_fft < max(self.win_lengths):
            raise ConfigError(f"bad STFT settings: windows {self.win_lengths}, hop {self.hop}, n_fft {self.n_fft} samples",
                              fix="windows >= 2 samples, hop >= 1 sample, n_fft >= the longest window")
        from transformers.audio_utils import mel_filter_bank

        fb = mel_filter_bank(num_frequency_bins=self.n_fft // 2 + 1, num_mel_filters=self.n_mels,
                             min_frequency=self.f_min, max_frequency=self.f_max, sampling_rate=self.sample_rate,
                             norm="slaney", mel_scale="slaney").astype(np.float32)  # [F, M]
        self.filterbank = torch.from_numpy(fb)
        self._blocks = self._make_blocks(fb)
        # each Hann window zero-padded to n_fft and centred, as torch.stft and librosa do
        self._windows = torch.zeros(len(self.win_lengths), self.n_fft)
        for k, wl in enumerate(self.win_lengths):
            left = (self.n_fft - wl) // 2
            self._windows[k, left:left + wl] = torch.hann_window(wl, periodic=True)
        self._on_device: dict[str, tuple] = {}

    # ------------------------------------------------------------------ settings
    def config(self) -> dict:
        """The settings that decide the output (cache keys, saved model configs)."""
        return {"sample_rate": self.sample_rate, "windows_ms": list(self.windows_ms), "hop_ms": self.hop_ms,
                "n_mels": self.n_mels, "f_min": self.f_min, "f_max": self.f_max, "n_fft": self.n_fft,
                "top_db": self.top_db, "amin": self.amin}

    def n_frames(self, n_samples: int) -> int:
        """T for clips of ``n_samples`` samples (at ``sample_rate``)."""
        return 1 + int(n_samples) // self.hop

    def __repr__(self) -> str:
        return f"MultiWindowLogMel({self.config()})"

    @staticmethod
    def _make_blocks(fb: np.ndarray) -> list[tuple[int, int, int, int]]:
        """(first band, end band, first bin, end bin) for blocks of bands and the bins they touch."""
        blocks = []
        for a in range(0, fb.shape[1], _BANDS_PER_BLOCK):
            b = min(a + _BANDS_PER_BLOCK, fb.shape[1])
            bins = np.flatnonzero((fb[:, a:b] > 0).any(axis=1))
            if bins.size:
                blocks.append((a, b, int(bins[0]), int(bins[-1]) + 1))
        return blocks

    def _resolve_device(self, x):
        import torch

        if self.device is None:
            return x.device
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} asked for, but torch sees no CUDA device",
                              fix="use device='cpu' or 'auto'")
        return device

    def _tensors(self, device) -> tuple:
        key = str(device)
        if key not in self._on_device:
            # interleaved (re, im) rows: the squared real view of the FFT goes straight into the matmul
            weights = [self.filterbank[lo:hi, a:b].repeat_interleave(2, dim=0).contiguous().to(device)
                       for a, b, lo, hi in self._blocks]
            self._on_device[key] = (self._windows.to(device), weights)
        return self._on_device[key]

    # ------------------------------------------------------------------ computing
    def __call__(self, waveforms, sample_rate: int | None = None):
        """Features ``[N, n_windows, n_mels, T]`` (float32, on the chosen device) for clips ``[N, S]``."""
        import torch

        x = _as_batch(waveforms)
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if rate != self.sample_rate:
            x = _resampled(x, rate, self.sample_rate)
        device = self._resolve_device(x)
        x = x.to(device)
        if x.shape[1] <= self.n_fft // 2:
            raise ConfigError(f"clips of {x.shape[1]} samples are too short for n_fft {self.n_fft}",
                              fix=f"use clips longer than {self.n_fft / self.sample_rate:.3f} s")
        with torch.no_grad():
            return self._compute(x, device)

    def _chunking(self, device) -> tuple[int, int]:
        """(clips, frames) computed together: a few clips on CPU, where a small working set keeps the
        caches warm (on 2 and on 16 cores, 4 whole 5 s clips at a time came within 2 % of the best of
        15 chunkings; bench/README.md), more on a GPU."""
        clips = self.batch_size if self.batch_size is not None else (4 if device.type == "cpu" else 32)
        frames = self.chunk_frames if self.chunk_frames is not None else _MAX_CHUNK_FRAMES
        return clips, frames

    def _compute(self, x, device):
        import torch

        windows, weights = self._tensors(device)
        n_clips, n_samples = x.shape
        n_win, frames, n_bins = len(self.win_lengths), self.n_frames(n_samples), self.n_fft // 2 + 1
        half = self.n_fft // 2
        padded = torch.nn.functional.pad(x[:, None, :], (half, half), mode="reflect")[:, 0]
        framed = padded.unfold(-1, self.n_fft, self.hop)[:, :frames]  # [N, T, n_fft], a view (no copy)
        mel = torch.empty((n_clips, n_win, frames, self.n_mels), device=device)
        per_clips, per_frames = self._chunking(device)
        per_clips, per_frames = min(per_clips, n_clips), min(per_frames, frames)
        # windowed frames, zero outside each window's span: the zeros are written once per call,
        # then only each window's span is overwritten, chunk after chunk (no allocation per chunk)
        buffer = torch.zeros((per_clips, n_win, per_frames, self.n_fft), device=device)
        spectra = torch.empty((per_clips, n_win, per_frames, n_bins), dtype=torch.complex64, device=device)
        for i in range(0, n_clips, per_clips):
            for t in range(0, frames, per_frames):
                chunk = framed[i:i + per_clips, t:t + per_frames]
                n, m = chunk.shape[:2]
                frame_buf = buffer[:n, :, :m]
                for k, wl in enumerate(self.win_lengths):
                    left = (self.n_fft - wl) // 2
                    torch.mul(chunk[..., left:left + wl], windows[k, left:left + wl],
                              out=frame_buf[:, k, :, left:left + wl])
                if m == per_frames:
                    spec = torch.fft.rfft(frame_buf, out=spectra[:n])  # [n, W, m, F]
                else:  # the last, shorter chunk of frames
                    spec = torch.fft.rfft(frame_buf)
                power = torch.view_as_real(spec).reshape(-1, 2 * n_bins).square_()  # re^2, im^2 interleaved
                # the interleaved filterbank sums re^2 + im^2 under each triangle, block by block
                mel[i:i + n, :, t:t + m] = torch.cat(
                    [torch.matmul(power[:, 2 * lo:2 * hi], w) for (_, _, lo, hi), w in zip(self._blocks, weights)],
                    dim=1).view(n, n_win, m, self.n_mels)
        db = mel.clamp_min_(self.amin).log10_().mul_(10.0)
        if self.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - self.top_db)
        return db.transpose(-1, -2).contiguous()  # [N, W, mels, T]


class ASTFrontEnd:
    """The Audio Spectrogram Transformer's input: transformers' ``ASTFeatureExtractor``.

    128 Kaldi-style log-mel filter banks (25 ms window, 10 ms hop), padded or cut to
    ``max_length`` frames and normalised with the extractor's ``mean``/``std`` when
    ``do_normalize``. Uses the extractor's numpy path (no torchaudio).

    Args:
        feature_extractor: an existing ``ASTFeatureExtractor`` (e.g. from a checkpoint's
            ``preprocessor_config.json``); otherwise one is built from ``kwargs``
            (``sampling_rate`` defaults to 16000).
    """

    name = "ast-fbank"

    def __init__(self, feature_extractor=None, **kwargs):
        from transformers import ASTFeatureExtractor

        if feature_extractor is not None and kwargs:
            raise ConfigError("pass either an ASTFeatureExtractor or its settings, not both")
        if feature_extractor is None:
            kwargs.setdefault("sampling_rate", 16000)
            try:
                with warnings.catch_warnings():
                    # AST's published front end (128 mel bins over a 512-point FFT) has empty low filters;
                    # transformers warns about it on every construction. Kaldi-style log floors them.
                    warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
                    feature_extractor = ASTFeatureExtractor(**kwargs)
            except TypeError as exc:
                raise ConfigError(f"bad ASTFeatureExtractor settings {kwargs}: {exc}",
                                  fix="use ASTFeatureExtractor's arguments (max_length, num_mel_bins, ...)") from exc
        self.extractor = feature_extractor

    @property
    def sample_rate(self) -> int:
        return int(self.extractor.sampling_rate)

    def config(self) -> dict:
        keys = ("sampling_rate", "num_mel_bins", "max_length", "do_normalize", "mean", "std", "padding_value")
        return {k: getattr(self.extractor, k) for k in keys if hasattr(self.extractor, k)}

    def __repr__(self) -> str:
        return f"ASTFrontEnd({self.config()})"

    def __call__(self, waveforms, sample_rate: int | None = None):
        """Filter banks ``[N, max_length, num_mel_bins]`` (float32, CPU) for clips ``[N, S]``."""
        import torch

        x = _as_batch(waveforms)
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if rate != self.sample_rate:
            x = _resampled(x, rate, self.sample_rate)
        rows = list(x.detach().cpu().numpy())
        values = self.extractor(rows, sampling_rate=self.sample_rate, return_tensors="np")["input_values"]
        return torch.from_numpy(np.asarray(values, dtype=np.float32))


class NumpyASTFrontEnd:
    """The AST front end in numpy alone (plugin ``ast-fbank-numpy``): no torch, no transformers.

    Exactly the computation of transformers' ``ASTFeatureExtractor`` on its numpy path (what
    :class:`ASTFrontEnd` and the ``ast`` classifier's ``featurise`` give, un-normalised): clips
    resampled with soxr to ``sampling_rate``; frames of 400 samples every 160 (Kaldi's snip
    edges), each with its mean removed, pre-emphasis 0.97, a symmetric Hann window, a 512-point
    FFT; power through ``num_mel_bins`` Kaldi-scale triangles (built in mel space) from 20 Hz to
    half the rate; ``log(max(mel, 1.19e-7))``; padded with 0 or cut to ``max_length`` frames.
    The light screening runtime (:mod:`steth_hub.runtime`) feeds these features to the exported
    ONNX network; the export checks on real clips that they match ``featurise``.

    Returns numpy float32 ``[N, max_length, num_mel_bins]``.
    """

    name = "ast-fbank-numpy"
    FRAME_LENGTH, FRAME_HOP, FFT_LENGTH = 400, 160, 512
    PREEMPHASIS, MEL_FLOOR, MIN_HZ = 0.97, 1.192092955078125e-07, 20.0

    def __init__(self, sampling_rate: int = 16000, num_mel_bins: int = 128, max_length: int = 1024):
        self.sample_rate = int(sampling_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.max_length = int(max_length)
        if self.sample_rate <= 0 or self.num_mel_bins < 1 or self.max_length < 1:
            raise ConfigError(f"bad ast-fbank-numpy settings {self.config()}",
                              fix="sampling_rate > 0, num_mel_bins >= 1, max_length >= 1")
        self.mel_filters = self._kaldi_filters(self.FFT_LENGTH // 2 + 1, self.num_mel_bins, self.MIN_HZ,
                                               float(self.sample_rate // 2), self.sample_rate)  # [F, M] float64
        n = self.FRAME_LENGTH  # np.hanning(n) is the symmetric Hann window (periodic=False)
        self.window = np.hanning(n)

    def config(self) -> dict:
        return {"sampling_rate": self.sample_rate, "num_mel_bins": self.num_mel_bins, "max_length": self.max_length}

    def __repr__(self) -> str:
        return f"NumpyASTFrontEnd({self.config()})"

    @staticmethod
    def _kaldi_filters(n_bins: int, n_mels: int, f_min: float, f_max: float, rate: int) -> np.ndarray:
        """transformers' ``mel_filter_bank(..., norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)``."""
        def to_mel(f):
            return 1127.0 * np.log(1.0 + (f / 700.0))

        mel_freqs = np.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2)
        fft_mels = to_mel(rate / ((n_bins - 1) * 2) * np.arange(n_bins))
        diff = np.diff(mel_freqs)
        slopes = np.expand_dims(mel_freqs, 0) - np.expand_dims(fft_mels, 1)
        down, up = -slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]
        return np.maximum(np.zeros(1), np.minimum(down, up))

    def _fbank(self, row: np.ndarray) -> np.ndarray:
        """``[frames, num_mel_bins]`` log-mel filter banks of one clip at ``sample_rate`` (float32)."""
        length, hop = self.FRAME_LENGTH, self.FRAME_HOP
        x = np.asarray(row, dtype=np.float32).astype(np.float64)
        n_frames = int(1 + np.floor((x.size - length) / hop))
        if n_frames < 1:
            return np.zeros((0, self.num_mel_bins), dtype=np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(x, length)[::hop][:n_frames].copy()
        frames -= frames.mean(axis=1, keepdims=True)
        emphasised = frames.copy()
        emphasised[:, 1:] -= self.PREEMPHASIS * frames[:, :-1]
        emphasised[:, 0] *= 1 - self.PREEMPHASIS
        emphasised *= self.window
        # as transformers: the spectrum is kept as complex64, its power taken in float64
        spectrum = np.fft.rfft(emphasised, n=self.FFT_LENGTH, axis=1).astype(np.complex64)
        power = np.abs(spectrum, dtype=np.float64) ** 2.0
        mel = np.maximum(self.MEL_FLOOR, np.dot(self.mel_filters.T, power.T))
        return np.asarray(np.log(mel), dtype=np.float32).T

    def __call__(self, waveforms, sample_rate: int | None = None) -> np.ndarray:
        """Filter banks ``[N, max_length, num_mel_bins]`` (numpy float32) for clips ``[N, S]``."""
        from steth_hub.audio import resample

        x = clip_batch(waveforms, error=ConfigError)
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        out = np.zeros((len(x), self.max_length, self.num_mel_bins), dtype=np.float32)
        for i, row in enumerate(x):
            fbank = self._fbank(resample(row, rate, self.sample_rate) if rate != self.sample_rate else row)
            n = min(self.max_length, fbank.shape[0])
            out[i, :n] = fbank[:n]
        return out


# =========================================================================== computing over a set
def compute_features(extractor, waveforms: np.ndarray, sample_rate: int, *, batch_size: int = 32,
                     progress: bool = False, desc: str = "features"):
    """Run ``extractor`` over many clips in batches (with a progress bar); returns a CPU tensor."""
    import torch
    from tqdm.auto import tqdm

    parts = []
    for i in tqdm(range(0, len(waveforms), batch_size), desc=desc, unit="batch", disable=not progress):
        parts.append(torch.as_tensor(extractor(waveforms[i:i + batch_size], sample_rate)).detach().cpu())
    if not parts:
        raise ConfigError("no clips to compute features for")
    return torch.cat(parts)


def _extractor_settings(extractor) -> dict:
    config = getattr(extractor, "config", None)
    if callable(config):
        return json.loads(json.dumps(config(), default=str))
    return {"repr": repr(extractor)}


@dataclass
class FeatureSet:
    """Features of a corpus's clips, with the clips' labels and owners (patient-level work needs them).

    Attributes:
        features: CPU tensor ``[N, ...]``.
        labels, recording_ids, patient_ids, starts: one per clip (as in the :class:`ClipSet`).
        meta: extractor name and settings, the preset, the corpus fingerprint, the cache key.
        path: the cache folder it lives in.
        reused: True when read from the cache rather than computed.
    """

    features: Any
    labels: np.ndarray
    recording_ids: np.ndarray
    patient_ids: np.ndarray
    starts: np.ndarray
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    reused: bool = False

    def __len__(self) -> int:
        return len(self.labels)


FEATURES_FILE = "features.safetensors"
FEATURES_INDEX = "features.json"


def features_dir(corpus_path: str | os.PathLike, preset_name: str, extractor_name: str) -> Path:
    """``CORPUS/features/<preset>/<extractor>/``."""
    return Path(corpus_path) / "features" / preset_name / extractor_name


def _load_cached(folder: Path, key: str) -> FeatureSet | None:
    from safetensors.torch import load_file

    index_path = folder / FEATURES_INDEX
    if not index_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("key") != key:
            return None
        arrays = load_file(str(folder / FEATURES_FILE))
        fs = FeatureSet(arrays["features"], arrays["labels"].numpy(), np.asarray(index["recording_ids"], dtype=object),
                        np.asarray(index["patient_ids"], dtype=object), arrays["starts"].numpy(), index["meta"],
                        folder, True)
    except Exception as exc:  # a damaged cache (SafetensorError is no OSError) is recomputed, never trusted
        log.warning("recomputing features: cannot read %s (%s)", folder, exc)
        return None
    if len(fs.features) != len(fs.labels) or len(fs.labels) != len(fs.recording_ids):
        log.warning("recomputing features: %s is inconsistent", folder)
        return None
    return fs


def corpus_features(corpus, extractor: str = "multiwindow-logmel", preset=None, *,
                    extractor_params: Mapping | None = None, batch_size: int = 32, progress: bool = True,
                    refresh: bool = False) -> FeatureSet:
    """Features of a corpus's preprocessed clips, computed once and kept with the corpus.

    The clips come from :func:`steth_hub.preprocess.cached_clips` (computed and saved when
    missing). The features are stored in ``CORPUS/features/<preset>/<extractor>/`` (safetensors
    + an index, written atomically as one folder) under a key made of the corpus fingerprint,
    the preset's steps and the extractor's name and settings; a later call with the same key
    reads them back instead of recomputing.
    """
    import torch
    from safetensors.torch import save as save_tensors

    from steth_hub.fileio import atomic_directory, atomic_write_bytes, atomic_write_json
    from steth_hub.preprocess import cached_clips, load_preset
    from steth_hub.registry import get_registry

    if isinstance(corpus, (str, os.PathLike)):
        from steth_hub.corpus import load_corpus

        corpus = load_corpus(corpus)
    preset = load_preset(preset)
    spec = get_registry().get("feature_extractor", extractor)
    fx = spec.create(**dict(extractor_params or {}))
    settings = _extractor_settings(fx)
    from steth_hub.preprocess import corpus_fingerprint

    fingerprint = corpus_fingerprint(corpus)
    key_data = {"corpus": fingerprint, "preset": preset.to_dict()["steps"], "extractor": extractor,
                "settings": settings}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()
    folder = features_dir(corpus.path, preset.name, extractor)
    if not refresh and fingerprint:
        cached = _load_cached(folder, key)
        if cached is not None:
            return cached
    clips, skipped, _ = cached_clips(corpus, preset, progress=progress, refresh=refresh)
    feats = compute_features(fx, clips.waveforms, clips.sample_rate, batch_size=batch_size, progress=progress,
                             desc=f"features ({extractor})").to(torch.float32).contiguous()
    meta = {"extractor": extractor, "settings": settings, "preset": preset.to_dict(), "corpus_fingerprint": fingerprint,
            "corpus": os.fspath(corpus.path), "n_clips": len(clips), "shape": list(feats.shape),
            "sample_rate": clips.sample_rate, "skipped": skipped}
    index = {"key": key, "recording_ids": [str(r) for r in clips.recording_ids],
             "patient_ids": [str(p) for p in clips.patient_ids], "meta": meta}
    tensors = {"features": feats, "labels": torch.from_numpy(np.ascontiguousarray(clips.labels)),
               "starts": torch.from_numpy(np.ascontiguousarray(clips.starts))}
    try:
        with atomic_directory(folder) as tmp:
            atomic_write_bytes(tmp / FEATURES_FILE, save_tensors(tensors))
            atomic_write_json(tmp / FEATURES_INDEX, index)
    except OSError as exc:
        raise CorpusError(f"cannot write the feature cache: {exc}", path=folder,
                          fix="check free disk space and permissions on the corpus folder") from exc
    return FeatureSet(feats, clips.labels, clips.recording_ids, clips.patient_ids, clips.starts, meta, folder, False)
