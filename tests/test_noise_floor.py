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
