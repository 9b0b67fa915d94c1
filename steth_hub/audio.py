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
``too-large``      file larger than ``max_bytes``, or more samples (channels x
                   frames, read from the header) than ``max_samples``
``not-a-file``     a FIFO, device or socket (reading it could block forever)
``sample-rate``    sample rate below ``min_sample_rate``
=================  =========================================================

Decoding is bounded: the header's channels x rate x duration is checked before a sample
is read, and the file is read in blocks of :data:`BLOCK_FRAMES` frames mixed down to mono
as they come, so memory stays near one mono float32 copy of the recording.

Recoverable oddities become warnings on the :class:`Recording` instead: a stereo file
is mixed down to mono, a WAV whose header promises more data than the file holds is
flagged as truncated, a low sample rate is flagged because the band above its Nyquist
frequency is empty, an 8-bit or companded recording (``PCM_U8``, ``PCM_S8``, u-law, A-law,
ADPCM, GSM; or 16-bit samples that only take 8-bit values) is flagged as degraded: its
quantisation noise is audible to a model.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
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
#: channels x frames above this are refused from the header, before decoding (600 s of 48 kHz stereo fit)
DEFAULT_MAX_SAMPLES = 64 * 2**20
#: frames read at once while decoding
BLOCK_FRAMES = 1 << 16
#: libsndfile subtypes that hold 8 bits (or fewer) of real resolution per sample
LOW_RESOLUTION_SUBTYPES = {
    "PCM_U8": "8-bit", "PCM_S8": "8-bit", "ULAW": "8-bit u-law", "ALAW": "8-bit A-law",
    "IMA_ADPCM": "4-bit ADPCM", "MS_ADPCM": "4-bit ADPCM", "VOX_ADPCM": "4-bit ADPCM", "GSM610": "GSM 6.10",
    "G721_32": "4-bit G.721", "G723_24": "3-bit G.723", "G723_40": "5-bit G.723", "DWVW_12": "12-bit DWVW",
    "NMS_ADPCM_16": "NMS ADPCM", "NMS_ADPCM_24": "NMS ADPCM", "NMS_ADPCM_32": "NMS ADPCM",
}
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
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
) -> Recording:
    """Decode a recording from a path, bytes or a binary file object.

    Returns a mono float32 :class:`Recording` at the file's own sample rate; raises
    :class:`~steth_hub.errors.AudioError` (with ``code``, the file and a fix) when the
    recording cannot be used. Only regular files are read; the header's channels x frames
    is checked against ``max_samples`` before decoding, which then goes block by block.
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
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):  # a FIFO would block the read forever; a device never ends
            kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode)
                    or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise AudioError(f"is {kind}, not a recording file", path=name, code="not-a-file",
                             fix="save the recording to a regular file and pass that")
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
            raw = source.read() if max_bytes is None else source.read(max_bytes + 1)
        size = len(raw)
        if max_bytes is not None and size > max_bytes:
            raise AudioError(f"data is above the {max_bytes / 2**20:.0f} MiB limit",
                             path=name, code="too-large", fix="cut the recording into shorter files")
        head = raw[:4096]
        data = io.BytesIO(raw)
    if size == 0:
        raise AudioError("file is empty (0 bytes)", path=name, code="empty", fix="record or export it again")

    try:
        with sf.SoundFile(data) as fh:
            rate, channels, declared_frames = int(fh.samplerate), int(fh.channels), int(fh.frames)
            subtype = fh.subtype
            if max_seconds is not None and rate and declared_frames / rate > max_seconds:
                raise AudioError(
                    f"recording lasts {declared_frames / rate:.0f} s, above the {max_seconds:.0f} s limit",
                    path=name, code="too-long", fix="cut it into shorter recordings, or raise max_seconds")
            if max_samples is not None and channels * declared_frames > max_samples:
                raise AudioError(
                    f"{channels} channel(s) x {rate} Hz x {declared_frames / max(rate, 1):.0f} s = "
                    f"{channels * declared_frames / 1e6:.0f} M samples, above the {max_samples / 1e6:.0f} M limit "
                    "(decoding it would need too much memory)", path=name, code="too-large",
                    fix="export it as mono at 4-48 kHz (for example: ffmpeg -i INPUT -ac 1 -ar 16000 output.wav), "
                        "or cut it into shorter files")
            if rate < min_sample_rate:
                raise AudioError(f"sample rate {rate} Hz is below {min_sample_rate} Hz", path=name,
                                 code="sample-rate", fix="record at 4 kHz or more (16 kHz or more recommended)")
            mono, on_grid = _read_blocks(fh, name, channels, declared_frames, max_samples)
    except AudioError:
        raise
    except sf.LibsndfileError as exc:
        reason = (exc.error_string or str(exc)).strip()
        raise AudioError(f"cannot decode audio ({reason})", path=name, code="corrupt", fix=CONVERT_FIX) from exc
    except (RuntimeError, TypeError, ValueError, EOFError) as exc:  # soundfile raises these for odd inputs
        raise AudioError(f"cannot decode audio ({exc})", path=name, code="corrupt", fix=CONVERT_FIX) from exc

    warnings: list[str] = []
    frames = len(mono)
    if frames == 0:
        raise AudioError("recording holds no samples", path=name, code="empty", fix="record or export it again")
    if channels > 1:
        warnings.append(f"{channels} channels mixed down to mono")
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
    degraded = LOW_RESOLUTION_SUBTYPES.get(str(subtype or "").upper())
    if degraded:
        warnings.append(low_resolution_warning(degraded, subtype))
    elif on_grid and peak > SILENCE_PEAK:
        warnings.append(EIGHT_BIT_VALUES)
    return Recording(samples=mono, sample_rate=int(rate), source=name, original_sample_rate=int(rate),
                     channels=int(channels), subtype=subtype, warnings=warnings)


def _read_blocks(fh, name: str, channels: int, declared_frames: int, max_samples: int | None
                 ) -> tuple[np.ndarray, bool]:
    """Read an open SoundFile block by block, mixing each to mono; returns (mono float32, all on an 8-bit grid).

    NaN/inf samples are refused as they are met; more frames than the header declared (a lying
    header) still stop at ``max_samples``."""
    parts: list[np.ndarray] = []
    total = 0
    grid = True
    for block in fh.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
        if not np.isfinite(block).all():
            bad = int((~np.isfinite(block)).sum())
            raise AudioError(f"{bad} samples{' (at least)' if total else ''} are NaN or infinite", path=name,
                             code="not-finite", fix="re-export the recording; the file's sample values are broken")
        total += len(block)
        if max_samples is not None and total * channels > max_samples:
            raise AudioError(f"more than {max_samples / 1e6:.0f} M samples (the header declared "
                             f"{declared_frames} frames)", path=name, code="too-large",
                             fix="export it as mono at 4-48 kHz, or cut it into shorter files")
        grid = grid and on_8bit_grid(block[:, 0])
        parts.append(block[:, 0].copy() if channels == 1 else block.mean(axis=1, dtype=np.float32))
    mono = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), grid


def on_8bit_grid(samples: np.ndarray) -> bool:
    """Whether every sample is a multiple of 1/128 of full scale (within 1.5 16-bit steps; full
    scale is 32767): audio that passed through 8-bit storage, whatever its container says now."""
    return _on_grid(np.asarray(samples, dtype=np.float32), 8)


def _on_grid(x: np.ndarray, bits: int) -> bool:
    """Whether every sample is a multiple of 2^-(bits-1) of full scale, within 1.5 16-bit steps."""
    scaled = x * 2.0 ** (bits - 1)
    return bool(np.all(np.abs(scaled - np.round(scaled)) <= 1.5 * 2.0 ** (bits - 16)))


def stored_bits(samples: np.ndarray) -> int | None:
    """The fewest bits (8-12) whose grid every sample sits on (multiples of 2^-(bits-1) of full scale,
    within 1.5 16-bit steps, as :func:`on_8bit_grid`), or None for finer samples (a 16-bit file), for
    integer arrays and for near-silence. Audio that passed through coarse storage keeps its grid
    whatever its container says now, until it is resampled, re-levelled or lossy-encoded. Two 8-bit
    channels mixed to mono sit on the 9-bit grid (the noise estimate is then about 3 dB
    optimistic); three or more channels mixed leave no grid this finds."""
    arr = np.asarray(samples)
    if not len(arr) or not np.issubdtype(arr.dtype, np.floating):
        return None  # integer samples: scale them to full scale first (from_array does)
    x = arr.astype(np.float64)
    if float(np.max(np.abs(x))) <= 4 * 2.0 ** -15:
        return None  # a few 16-bit steps at most: every grid fits, nothing can be told
    # finer grids are not told apart from 16 bits within that tolerance
    return next((bits for bits in range(8, 13) if _on_grid(x, bits)), None)


def quantisation_snr_db(samples: np.ndarray) -> float | None:
    """How far (dB) the quantisation noise of the grid the samples sit on (:func:`stored_bits`) lies
    below their RMS; None where :func:`stored_bits` finds no grid (a 16-bit file, near-silence)."""
    bits = stored_bits(samples)
    if bits is None:
        return None
    x = np.asarray(samples, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x ** 2)))
    noise = 2.0 ** (1 - bits) / np.sqrt(12.0)  # a uniform error of one step
    return float(20.0 * np.log10(max(rms, 1e-30) / noise))


def low_resolution_warning(kind: str, what: str) -> str:
    """The ``degraded`` warning of audio stored with too few bits (a file's subtype, an array's dtype)."""
    return (f"degraded: {kind} samples ({what}); quantisation noise this coarse can change the result, "
            "record or export at 16 bits or more")


EIGHT_BIT_VALUES = ("degraded: the samples take only 8-bit values (re-encoded from 8 bits?); quantisation "
                    "noise this coarse can change the result, use the original recording")


def from_array(samples: np.ndarray, sample_rate: int, *, source: str = "<array>",
               allow_silent: bool = False) -> Recording:
    """Wrap an array (mono, or channels last) as a :class:`Recording`, with the same checks as :func:`decode`."""
    if sample_rate is None:
        raise AudioError("an array needs its sample_rate", path=source, code="sample-rate",
                         fix="pass sample_rate=... with the array")
    arr = np.asarray(samples)
    given = str(arr.dtype)
    eight_bit = np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize == 1
    if np.issubdtype(arr.dtype, np.integer):  # scaled as soundfile scales a file's samples
        info = np.iinfo(arr.dtype)
        if int(info.min) == 0:  # unsigned: offset binary (as in 8-bit WAV)
            half = (int(info.max) + 1) / 2.0
            arr = (arr.astype(np.float64) - half) / half
        else:
            arr = arr.astype(np.float64) / float(-int(info.min))
    if arr.ndim == 2:
        arr = arr.mean(axis=1 if arr.shape[1] < arr.shape[0] else 0)
    if arr.ndim != 1:
        raise AudioError(f"expected a 1-D (or 2-D multichannel) array, got shape {arr.shape}", path=source,
                         code="corrupt", fix="pass samples as a 1-D array")
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
    if eight_bit:
        warnings.append(low_resolution_warning("8-bit", f"{given} array"))
    elif on_8bit_grid(arr) and float(np.max(np.abs(arr))) > SILENCE_PEAK:  # the same rule as decode's
        warnings.append(EIGHT_BIT_VALUES)
    return Recording(samples=arr, sample_rate=int(sample_rate), source=source, warnings=warnings)
