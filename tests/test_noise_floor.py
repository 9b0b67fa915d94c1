"""The noise-floor step: the same white noise a fixed distance below each recording's RMS."""

from __future__ import annotations

import numpy as np
import pytest

from steth_hub.clips import Clip
from steth_hub.errors import ConfigError
from steth_hub.preprocess import NoiseFloor


def _clip(x, sr=4000):
    return Clip(np.asarray(x, np.float32), sr, "r", 0.0, 0)


def test_the_floor_sits_snr_db_below_the_rms_and_is_the_same_every_time(example_wavs):
    from steth_hub.audio import decode

    rec = decode(next(p for p in example_wavs if "EP38" in p.name))
    step = NoiseFloor(snr_db=35.0)
    a, b = step([_clip(rec.samples, rec.sample_rate)])[0], step([_clip(rec.samples, rec.sample_rate)])[0]
    assert np.array_equal(a.samples, b.samples)  # deterministic: screening gives one answer
    added = a.samples.astype(np.float64) - rec.samples
    snr = 10 * np.log10(np.mean(rec.samples.astype(np.float64) ** 2) / np.mean(added ** 2))
    assert snr == pytest.approx(35.0, abs=0.2)


def test_a_quieter_change_of_the_floor_is_masked():
    rng = np.random.default_rng(1)
    t = np.arange(4000 * 4) / 4000
    breath = (np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0.3)).astype(np.float32)  # gaps of silence
    quiet = breath + 10 ** (-60 / 20) * np.sqrt(np.mean(breath ** 2)) * rng.standard_normal(len(t)).astype(np.float32)
    step = NoiseFloor(snr_db=35.0)
    gap = np.sin(2 * np.pi * 0.5 * t) <= 0.3

    def floor_db(x):
        return 10 * np.log10(np.mean(step([_clip(x)])[0].samples[gap].astype(np.float64) ** 2))

    def raw_db(x):
        return 10 * np.log10(np.mean(x[gap].astype(np.float64) ** 2) + 1e-30)

    assert raw_db(quiet) - raw_db(breath) > 100  # without the step, 60 dB noise changes the silence completely
    assert abs(floor_db(quiet) - floor_db(breath)) < 0.1  # with it, the floor hardly moves


def test_bad_settings_name_the_fix():
    with pytest.raises(ConfigError, match="snr_db"):
        NoiseFloor(snr_db=5)


def _requantised(x, bits):
    step = 2.0 ** (1 - bits)
    return np.clip(np.round(np.asarray(x, np.float64) / step) * step, -1.0, 1.0 - step).astype(np.float32)


def test_the_grid_and_its_noise_are_found_on_real_recordings(example_wavs):
    from steth_hub.audio import decode, quantisation_snr_db, stored_bits

    rec = decode(next(p for p in example_wavs if "EP38" in p.name))
    assert stored_bits(rec.samples) is None and quantisation_snr_db(rec.samples) is None  # a 16-bit file
    q8 = _requantised(rec.samples, 8)
    assert stored_bits(q8) == 8
    assert stored_bits(_requantised(rec.samples, 12)) == 12
    assert stored_bits((q8 * 32767).astype(np.int16)) is None  # integers: not full-scale samples
    assert stored_bits(np.full(100, 2.0 ** -14, np.float32)) is None  # near-silence fits every grid
    # two 8-bit channels mixed to mono sit on the 9-bit grid
    assert stored_bits(0.5 * (q8 + _requantised(rec.samples[::-1].copy(), 8))) == 9
    # the estimate is the noise the requantisation really added (a uniform error of one step)
    x = rec.samples.astype(np.float64)
    measured = 10 * np.log10(np.mean(x ** 2) / np.mean((q8 - x) ** 2))
    assert quantisation_snr_db(q8) == pytest.approx(measured, abs=1.5)


def test_storage_noise_louder_than_the_floor_is_refused_and_quieter_passes(example_wavs):
    from steth_hub.audio import decode, quantisation_snr_db
    from steth_hub.errors import RecordingRejected

    rec = decode(next(p for p in example_wavs if "EP38" in p.name))
    q8 = _requantised(rec.samples, 8)
    snr = quantisation_snr_db(q8)
    assert 15 < snr < 35  # a typical KAUH recording: 8-bit noise is louder than the 35 dB floor
    with pytest.raises(RecordingRejected, match=r"EP38.*8-bit grid.*louder than this model's noise floor") as err:
        NoiseFloor(snr_db=35.0)([Clip(q8, rec.sample_rate, str(rec.source), 0.0, 0)])
    assert err.value.code == "degraded" and "16 bits" in err.value.fix
    assert len(NoiseFloor(snr_db=snr - 3)([_clip(q8, rec.sample_rate)])) == 1  # a floor loud enough masks it
    loud = _requantised(rec.samples / np.max(np.abs(rec.samples)) * 0.99, 8)  # 8 bits used to full scale
    assert quantisation_snr_db(loud) > snr + 6  # the same bits, further below a louder recording
    assert len(NoiseFloor(snr_db=snr + 3)([_clip(loud, rec.sample_rate)])) == 1
    with pytest.raises(RecordingRejected):
        NoiseFloor(snr_db=snr + 3)([_clip(q8, rec.sample_rate)])
    assert len(NoiseFloor(snr_db=35.0)([_clip(rec.samples, rec.sample_rate)])) == 1  # the 16-bit original
    assert len(NoiseFloor(snr_db=35.0)([_clip(np.zeros(4000), 4000)])) == 1  # silence: another rule's business


@pytest.mark.slow
def test_a_floor_model_refuses_a_quiet_8_bit_file_and_the_batch_goes_on(example_wavs, tmp_path):
    import soundfile as sf

    import steth_hub
    from steth_hub.errors import RecordingRejected
    from steth_hub.screening import screen_many

    src = next(p for p in example_wavs if "EP38" in p.name)
    x, rate = sf.read(src, dtype="float32")
    sf.write(tmp_path / "quiet-u8.wav", x, rate, subtype="PCM_U8")
    with pytest.raises(RecordingRejected, match="quiet-u8.wav.*8-bit grid") as err:
        steth_hub.screen(tmp_path / "quiet-u8.wav", model="steth/efficientat-asthma-floor")
    assert err.value.code == "degraded"
    results, failures = screen_many([tmp_path / "quiet-u8.wav", src], model="steth/efficientat-asthma-floor",
                                  progress=False)
    assert len(results) == 1 and [f["code"] for f in failures] == ["degraded"]
    assert failures[0]["source"].endswith("quiet-u8.wav")
