"""Decoding real recordings, and every kind of bad input, with errors that name the file and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from steth_hub.audio import Recording, decode, from_array, resample
from steth_hub.errors import AudioError


@pytest.fixture(scope="module")
def real(example_wavs):
    return example_wavs[0]


def test_real_recording_decodes_to_mono_float32(example_wavs):
    for path in example_wavs:
        rec = decode(path)
        assert rec.samples.dtype == np.float32 and rec.samples.ndim == 1
        assert rec.duration == pytest.approx(10.0, abs=0.01)
        assert rec.sample_rate in (4000, 44100)
        assert 0 < np.abs(rec.samples).max() <= 1.0
        assert rec.source == str(path)


def test_low_sample_rate_is_a_warning_that_names_the_missing_band(real):
    rec = decode(real)
    assert rec.sample_rate == 4000
    assert any("nothing above 2000 Hz" in w for w in rec.warnings)


def test_bytes_and_path_decode_the_same(real):
    a, b = decode(real), decode(real.read_bytes())
    assert np.array_equal(a.samples, b.samples) and b.source == "<bytes>"
    assert a.content_hash() == b.content_hash()


def test_content_hash_ignores_the_container_but_not_the_sound(real, tmp_path):
    rec = decode(real)
    flac = tmp_path / "same.flac"
    sf.write(flac, rec.samples, rec.sample_rate, subtype="PCM_16")
    assert decode(flac).content_hash() == rec.content_hash()
    louder = tmp_path / "louder.wav"
    sf.write(louder, rec.samples * 0.5, rec.sample_rate, subtype="PCM_16")
    assert decode(louder).content_hash() != rec.content_hash()


def _assert_error(path, code, *words):
    with pytest.raises(AudioError) as err:
        decode(path)
    assert err.value.code == code
    text = str(err.value)
    assert str(path) in text and "fix:" in text
    for word in words:
        assert word in text
    return err.value


def test_missing_file(tmp_path):
    _assert_error(tmp_path / "nope.wav", "missing", "not found")


def test_folder_is_not_a_recording(tmp_path):
    _assert_error(tmp_path, "corrupt", "folder")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _assert_error(path, "empty")


def test_corrupt_bytes(real, tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"not audio at all " * 100)
    _assert_error(path, "corrupt", "cannot decode", "ffmpeg")


def test_header_only_wav(real, tmp_path):
    path = tmp_path / "header.wav"
    path.write_bytes(real.read_bytes()[:30])
    _assert_error(path, "corrupt")


def test_wav_with_no_samples(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 4000)
    _assert_error(path, "empty")


def test_truncated_wav_decodes_with_a_warning(real, tmp_path):
    path = tmp_path / "truncated.wav"
    data = real.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    rec = decode(path)
    assert rec.duration == pytest.approx(5.0, abs=0.05)
    assert any(w.startswith("truncated") and "10.00 s" in w for w in rec.warnings)


def test_silent_recording(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(40000, dtype=np.float32), 4000, subtype="PCM_16")
    _assert_error(path, "silent", "microphone")
    assert decode(path, allow_silent=True).duration == 10.0


def test_nan_samples_in_a_float_wav(real, tmp_path):
    rec = decode(real)
    x = rec.samples.copy()
    x[1000:1010] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, rec.sample_rate, subtype="FLOAT")
    _assert_error(path, "not-finite", "NaN")


def test_stereo_is_mixed_to_mono_with_a_warning(real, tmp_path):
    rec = decode(real)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([rec.samples, rec.samples * 0.5], axis=1), rec.sample_rate, subtype="FLOAT")
    stereo = decode(path)
    assert stereo.channels == 2 and stereo.samples.ndim == 1
    assert np.allclose(stereo.samples, rec.samples * 0.75, atol=1e-4)
    assert any("mixed down to mono" in w for w in stereo.warnings)


@pytest.mark.parametrize("rate", [8000, 48000, 22050])
def test_odd_sample_rates_decode(real, tmp_path, rate):
    rec = decode(real)
    path = tmp_path / f"r{rate}.wav"
    sf.write(path, resample(rec.samples, rec.sample_rate, rate), rate, subtype="PCM_16")
    out = decode(path)
    assert out.sample_rate == rate and out.duration == pytest.approx(10.0, abs=0.01)


def test_too_low_sample_rate_is_refused(real, tmp_path):
    rec = decode(real)
    path = tmp_path / "r1000.wav"
    sf.write(path, resample(rec.samples, rec.sample_rate, 1000), 1000, subtype="PCM_16")
    _assert_error(path, "sample-rate", "1000 Hz")


def test_huge_recordings_are_refused_before_decoding(real, tmp_path):
    with pytest.raises(AudioError) as err:
        decode(real, max_seconds=5)
    assert err.value.code == "too-long"
    with pytest.raises(AudioError) as err:
        decode(real, max_bytes=1000)
    assert err.value.code == "too-large"


def test_resampled_keeps_the_sound_and_the_original_rate(real):
    rec = decode(real)
    up = rec.resampled(16000)
    assert up.sample_rate == 16000 and up.original_sample_rate == 4000
    assert len(up.samples) == 4 * len(rec.samples)
    back = resample(up.samples, 16000, 4000)
    assert np.corrcoef(back[100:-100], rec.samples[100:-100])[0, 1] > 0.99
    assert rec.resampled(4000) is rec


def test_from_array_checks_like_decode():
    x = (np.sin(np.arange(16000) / 10) * 0.1).astype(np.float32)
    rec = from_array(x, 16000)
    assert isinstance(rec, Recording) and rec.duration == 1.0 and rec.warnings == []
    stereo = from_array(np.stack([x, x], axis=1), 16000)
    assert stereo.samples.shape == (16000,)
    pcm = from_array((x * 32767).astype(np.int16), 16000)
    assert np.allclose(pcm.samples, x, atol=1e-4)
    for bad, code in [(np.zeros(0), "empty"), (np.full(100, np.nan), "not-finite"), (np.zeros(1000), "silent")]:
        with pytest.raises(AudioError) as err:
            from_array(bad, 16000)
        assert err.value.code == code
    with pytest.raises(AudioError, match="sample_rate"):
        from_array(x, None)


# --------------------------------------------------------------------------- issue 13: resource exhaustion
def test_many_channels_at_a_high_rate_are_refused_from_the_header(tmp_path, monkeypatch):
    """A 3.6 MB FLAC (8 channels, 192 kHz, 60 s) would decode to 92 M samples: refused before decoding."""
    path = tmp_path / "big.flac"
    with sf.SoundFile(path, "w", samplerate=192000, channels=8, subtype="PCM_16", format="FLAC") as fh:
        block = np.zeros((192000, 8), dtype=np.int16)
        block[::97, 0] = 300
        for _ in range(60):
            fh.write(block)
    assert path.stat().st_size < 5_000_000  # far below the 200 MB byte limit

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before checking the header")

    monkeypatch.setattr(sf.SoundFile, "blocks", no_decoding)
    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    with pytest.raises(AudioError) as err:
        decode(path)
    assert err.value.code == "too-large" and "8 channel(s) x 192000 Hz x 60 s" in str(err.value)
    assert "fix:" in str(err.value)


def test_decoding_goes_in_bounded_blocks(real, tmp_path):
    """Peak memory stays near one mono copy: a 4-channel 48 kHz minute needs far less than its 46 MB float32."""
    import tracemalloc

    rate, seconds, channels = 48000, 60, 4
    rec = decode(real).resampled(rate)
    one = np.tile(rec.samples, seconds * rate // len(rec.samples) + 1)[: seconds * rate]
    path = tmp_path / "four.wav"
    sf.write(path, np.stack([one * (0.9 - 0.2 * k) for k in range(channels)], axis=1), rate, subtype="PCM_16")
    mono_bytes = seconds * rate * 4
    tracemalloc.start()
    out = decode(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.channels == 4 and len(out.samples) == seconds * rate
    assert peak < 2.6 * mono_bytes, (peak, mono_bytes)  # sf.read of all channels needed 4x + the mono copy
    assert np.allclose(out.samples, one * 0.6, atol=2e-4)


def test_a_fifo_named_wav_is_refused_without_blocking(tmp_path):
    import os
    import threading

    fifo = tmp_path / "breath.wav"
    os.mkfifo(fifo)
    box = {}

    def run():
        try:
            decode(fifo)
        except AudioError as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock the reader so the test process can exit, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("decode blocked on a FIFO")
    assert box["error"].code == "not-a-file" and "FIFO" in str(box["error"])


def test_a_device_is_refused():
    with pytest.raises(AudioError) as err:
        decode("/dev/zero")
    assert err.value.code == "not-a-file"


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_S8", "ULAW", "ALAW"])
def test_8_bit_and_companded_recordings_are_flagged_as_degraded(real, tmp_path, subtype):
    rec = decode(real)
    path = tmp_path / f"{subtype}.{'aiff' if subtype == 'PCM_S8' else 'wav'}"
    sf.write(path, rec.samples, rec.sample_rate, subtype=subtype)
    out = decode(path)
    assert any(w.startswith("degraded:") and subtype in w for w in out.warnings), out.warnings
    assert not any(w.startswith("degraded") for w in rec.warnings)


def test_16_bit_samples_holding_8_bit_values_are_flagged(real, tmp_path):
    rec = decode(real)
    path = tmp_path / "requantised.wav"
    sf.write(path, np.round(rec.samples * 128) / 128, rec.sample_rate, subtype="PCM_16")
    assert any("only 8-bit values" in w for w in decode(path).warnings)


def test_an_array_holding_8_bit_values_is_flagged_like_a_file(real):
    from steth_hub.audio import from_array

    rec = decode(real)
    assert not any("8-bit" in w for w in from_array(rec.samples, rec.sample_rate).warnings)
    stored = np.clip(np.round(rec.samples * 128) / 128, -1.0, 1.0 - 1 / 128)  # what 8-bit storage keeps
    assert any("only 8-bit values" in w for w in from_array(stored, rec.sample_rate).warnings)


def test_integer_arrays_are_scaled_as_soundfile_scales_files_and_8_bit_ones_flagged(real, tmp_path):
    from steth_hub.audio import from_array

    rec = decode(real)
    for subtype, dtype in [("PCM_16", np.int16), ("PCM_32", np.int32), ("PCM_U8", np.uint8)]:
        path = tmp_path / f"{subtype}.wav"
        sf.write(path, rec.samples, rec.sample_rate, subtype=subtype)
        raw, _ = sf.read(path, dtype=dtype if dtype is not np.uint8 else "int16")
        if dtype is np.uint8:  # the same samples as an offset-binary 8-bit array
            raw = ((raw.astype(np.int32) // 256) + 128).astype(np.uint8)
        wrapped = from_array(raw, rec.sample_rate)
        np.testing.assert_allclose(wrapped.samples, decode(path).samples, atol=1e-6)
        assert any(w.startswith("degraded: 8-bit") for w in wrapped.warnings) == (dtype is np.uint8)
    signed = from_array(np.clip(np.round(rec.samples * 128), -128, 127).astype(np.int8), rec.sample_rate)
    assert any(w.startswith("degraded: 8-bit samples (int8 array)") for w in signed.warnings)
    stereo = from_array(np.stack([(rec.samples * 32767).astype(np.int16)] * 2, axis=1), rec.sample_rate)
    np.testing.assert_allclose(stereo.samples, rec.samples, atol=1e-4)  # mixed after scaling, not before
