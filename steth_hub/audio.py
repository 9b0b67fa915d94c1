"""Where a recording is decoded: file (or bytes, or array) -> mono float32 samples.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG/Opus, MP3); resampling uses soxr.
Every problem becomes an :class:`~steth_hub.errors.AudioError` that names the file, the
reason (``code``) and the fix:

=================  =========================================================
code               meaning
=================  =========================================================
``missing``        the file does not exist
``corrupt``        libsndfile cannot decode it (unknown format, broken header)
``empty``          no samples at all
``not-finite``     NaN or infinite samples (float files)
``silent``         all samples (nearly) zero
``too-long``       longer than ``max_seconds`` (protects memory and the demo)
``too-large``      file larger than ``max_bytes``
``sample-rate``    sample rate below ``min_sample_rate``
=================  =========================================================

Recoverable oddities become warnings on the :class:`Recording` instead: a stereo file
is mixed down to mono, a WAV whose header promises more data than the file holds is
flagged as truncated, a low sample rate is flagged because the band above its Nyquist
frequency is empty.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from steth_hub.errors import AudioError

Source = Union[str, os.PathLike, bytes, BinaryIO]

#: recordings longer than this are refused unless the caller raises the limit
DEFAULT_MAX_SECONDS = 600.0
#: files larger than this are refused before decoding
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
#: below this sample rate nothing useful about breath sounds survives
DEFAULT_MIN_SAMPLE_RATE = 2000
#: below this rate a warning says which band is missing (the features reach 8 kHz)
LOW_SAMPLE_RATE = 16000
#: peak amplitude (full scale = 1) at or below which a recording counts as silent (-80 dBFS)
SILENCE_PEAK = 1e-4

CONVERT_FIX = "convert it to WAV, FLAC, OGG or MP3 (for example: ffmpeg -i INPUT -ac 1 output.wav)"


@dataclass
class Recording:
    """A decoded recording: mono float32 samples in [-1, 1] at ``sample_rate``.

    Attributes:
        samples: 1-D float32 array.
        sample_rate: samples per second.
        source: the file path, or ``"<bytes>"`` / ``"<array>"``.
        original_sample_rate: the rate in the file, before any resampling.
        channels: channels in the file (the samples are always mono).
        subtype: libsndfile's subtype (``"PCM_16"``...), when decoded from a file.
        warnings: things a user should know that did not stop decoding.
    """

    samples: np.ndarray
    sample_rate: int
    source: str = "<array>"
    original_sample_rate: int | None = None
    channels: int = 1
    subtype: str | None = None
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.original_sample_rate is None:
            self.original_sample_rate = self.sample_rate

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / float(self.sample_rate)

    def content_hash(self) -> str:
        """SHA-256 of the decoded samples (16-bit quantised) and the original sample rate.

        Two files with the same sound hash the same even when their headers, names or
        containers differ, which is how duplicates across patients are found.
        """
        pcm = np.clip(np.round(self.samples * 32767.0), -32768, 32767).astype("<i2")
        digest = hashlib.sha256(struct.pack("<I", int(self.original_sample_rate or self.sample_rate)))
        digest.update(pcm.tobytes())
        return digest.hexdigest()

    def resampled(self, sample_rate: int) -> "Recording":
        """A copy at another sample rate (soxr, high quality); itself when the rate matches."""
        if int(sample_rate) == self.sample_rate:
            return self
        return Recording(
            samples=resample(self.samples, self.sample_rate, sample_rate),
            sample_rate=int(sample_rate),
            source=self.source,
            original_sample_rate=self.original_sample_rate,
            channels=self.channels,
            subtype=self.subtype,
            warnings=list(self.warnings),
        )


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a 1-D signal with soxr (band-limited, high quality)."""
    if int(from_rate) == int(to_rate):
        return np.asarray(samples, dtype=np.float32)
    import soxr

    out = soxr.resample(np.asarray(samples, dtype=np.float32), int(from_rate), int(to_rate), quality="HQ")
    return np.asarray(out, dtype=np.float32)


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return getattr(source, "name", None) or "<stream>"


def _declared_wav_frames(head: bytes, size: int) -> tuple[int, int] | None:
    """(frames the WAV header declares, frames the file actually holds), or None if not a plain WAV."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, None
    while pos + 8 <= len(head):
        chunk_id, chunk_size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if chunk_id == b"fmt " and pos + 8 + 14 <= len(head):
            block_align = struct.unpack("<H", head[pos + 8 + 12:pos + 8 + 14])[0]
        if chunk_id == b"data":
            if not block_align:
                return None
            available = max(0, size - (pos + 8))
            return chunk_size // block_align, available // block_align
        pos += 8 + chunk_size + (chunk_size & 1)
    return None


def decode(
    source: Source,
    *,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    min_sample_rate: int = DEFAULT_MIN_SAMPLE_RATE,
    allow_silent: bool = False,
) -> Recording:
    """Decode a recording from a path, bytes or a binary file object.

    Returns a mono float32 :class:`Recording` at the file's own sample rate; raises
    :class:`~steth_hub.errors.AudioError` (with ``code``, the file and a fix) when the
    recording cannot be used.
    """
    import soundfile as sf

    name = _name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError("file not found", path=name, code="missing",
                             fix="check the path (quote names that contain spaces or commas)")
        if path.is_dir():
            raise AudioError("is a folder, not a recording", path=name, code="corrupt",
                             fix="pass the audio files inside it (for example folder/*.wav)")
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise AudioError(f"file is {size / 2**20:.0f} MiB, above the {max_bytes / 2**20:.0f} MiB limit",
                             path=name, code="too-large", fix="cut the recording into shorter files")
        with open(path, "rb") as fh:
            head = fh.read(4096)
        data: Source = os.fspath(path)
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            raw = bytes(source)
        else:
            raw = source.read()
        size = len(raw)
        if max_bytes is not None and size > max_bytes:
            raise AudioError(f"data is {size / 2**20:.0f} MiB, above the {max_bytes / 2**20:.0f} MiB limit",
                             path=name, code="too-large", fix="cut the recording into shorter files")
        head = raw[:4096]
        data = io.BytesIO(raw)
    if size == 0:
        raise AudioError("file is empty (0 bytes)", path=name, code="empty", fix="record or export it again")

    try:
        info = sf.info(data)
        if isinstance(data, io.BytesIO):
            data.seek(0)
        if max_seconds is not None and info.samplerate and info.frames / info.samplerate > max_seconds:
            raise AudioError(
                f"recording lasts {info.frames / info.samplerate:.0f} s, above the {max_seconds:.0f} s limit",
                path=name, code="too-long", fix="cut it into shorter recordings, or raise max_seconds")
        samples, rate = sf.read(data, dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        reason = (exc.error_string or str(exc)).strip()
        raise AudioError(f"cannot decode audio ({reason})", path=name, code="corrupt", fix=CONVERT_FIX) from exc
    except (RuntimeError, TypeError, ValueError) as exc:  # soundfile raises these for odd inputs
        raise AudioError(f"cannot decode audio ({exc})", path=name, code="corrupt", fix=CONVERT_FIX) from exc

    warnings: list[str] = []
    frames, channels = samples.shape
    if frames == 0:
        raise AudioError("recording holds no samples", path=name, code="empty", fix="record or export it again")
    if rate < min_sample_rate:
        raise AudioError(f"sample rate {rate} Hz is below {min_sample_rate} Hz", path=name, code="sample-rate",
                         fix="record at 4 kHz or more (16 kHz or more recommended)")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError(f"{bad} samples are NaN or infinite", path=name, code="not-finite",
                         fix="re-export the recording; the file's sample values are broken")
    if channels > 1:
        samples = samples.mean(axis=1, keepdims=True)
        warnings.append(f"{channels} channels mixed down to mono")
    mono = np.ascontiguousarray(samples[:, 0], dtype=np.float32)
    peak = float(np.max(np.abs(mono)))
    if peak > 1.0:  # float files may exceed full scale; keep the shape, flag it
        warnings.append(f"peak {peak:.2f} above full scale; values kept as they are")
    if not allow_silent and peak <= SILENCE_PEAK:
        raise AudioError("recording is silent (peak at or below -80 dBFS)", path=name, code="silent",
                         fix="check the stethoscope's connection and microphone, then record again")
    declared = _declared_wav_frames(head, size)
    if declared is not None and declared[0] > declared[1]:
        warnings.append(
            f"truncated: the header declares {declared[0] / rate:.2f} s but the file holds {frames / rate:.2f} s")
    if rate < LOW_SAMPLE_RATE:
        warnings.append(f"low sample rate {rate} Hz: nothing above {rate // 2} Hz was recorded")
    return Recording(samples=mono, sample_rate=int(rate), source=name, original_sample_rate=int(rate),
                     channels=int(channels), subtype=getattr(info, "subtype", None), warnings=warnings)


def from_array(samples: np.ndarray, sample_rate: int, *, source: str = "<array>",
               allow_silent: bool = False) -> Recording:
    """Wrap an array (mono, or channels last) as a :class:`Recording`, with the same checks as :func:`decode`."""
    if sample_rate is None:
        raise AudioError("an array needs its sample_rate", path=source, code="sample-rate",
                         fix="pass sample_rate=... with the array")
    arr = np.asarray(samples)
    if arr.ndim == 2:
        arr = arr.mean(axis=1 if arr.shape[1] < arr.shape[0] else 0)
    if arr.ndim != 1:
        raise AudioError(f"expected a 1-D (or 2-D multichannel) array, got shape {arr.shape}", path=source,
                         code="corrupt", fix="pass samples as a 1-D array")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    arr = arr.astype(np.float32)
    if arr.size == 0:
        raise AudioError("recording holds no samples", path=source, code="empty", fix="pass a non-empty array")
    if not np.isfinite(arr).all():
        raise AudioError("samples are NaN or infinite", path=source, code="not-finite",
                         fix="replace the NaN/inf values")
    if int(sample_rate) < DEFAULT_MIN_SAMPLE_RATE:
        raise AudioError(f"sample rate {sample_rate} Hz is below {DEFAULT_MIN_SAMPLE_RATE} Hz", path=source,
                         code="sample-rate", fix="record at 4 kHz or more")
    if not allow_silent and float(np.max(np.abs(arr))) <= SILENCE_PEAK:
        raise AudioError("recording is silent (peak at or below -80 dBFS)", path=source, code="silent",
                         fix="check the microphone and record again")
    warnings = []
    if int(sample_rate) < LOW_SAMPLE_RATE:
        warnings.append(f"low sample rate {int(sample_rate)} Hz: nothing above {int(sample_rate) // 2} Hz was recorded")
    return Recording(samples=arr, sample_rate=int(sample_rate), source=source, warnings=warnings)
