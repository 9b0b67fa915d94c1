"""The sample-rate shortcut on the real shared data, and how the default preset's band-limit removes it.

All asthma recordings in the shared data are 4 kHz (nothing above 2 kHz); 48 non-asthma ones are
44.1 kHz. Without band-limiting, the mel bands above 2 kHz hold content for many 44.1 kHz recordings
and for no 4 kHz one: a perfect "not asthma" rule for a model to learn. With it, they do not.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from steth_hub.audio import decode  # noqa: E402
from steth_hub.errors import AudioError, RecordingRejected  # noqa: E402
from steth_hub.features import MultiWindowLogMel  # noqa: E402
from steth_hub.preprocess import BUILTIN_PRESETS, Preprocessor  # noqa: E402


def _above_floor_in_upper_bands(extractor, clips: np.ndarray) -> np.ndarray:
    """Per clip: the share of cells in the mel bands starting above 2.05 kHz that are above the dB floor."""
    fb = extractor.filterbank.numpy()
    freqs = np.arange(fb.shape[0]) * extractor.sample_rate / extractor.n_fft
    upper = np.array([freqs[fb[:, m] > 0].min() for m in range(fb.shape[1])]) >= 2050
    out = extractor(clips, extractor.sample_rate).numpy()
    above = out > out.max(axis=(2, 3), keepdims=True) - extractor.top_db + 1e-3
    return above[:, :, upper].mean(axis=(1, 2, 3))


@pytest.mark.slow
def test_bandlimit_removes_the_sample_rate_shortcut(shared_data):
    full_band = copy.deepcopy(BUILTIN_PRESETS["excerpt-10s"])
    full_band["steps"] = [s for s in full_band["steps"] if "bandlimit" not in s]
    presets = {"default": Preprocessor("excerpt-10s"), "full-band": Preprocessor({"name": "full-band", **full_band})}
    files = sorted(shared_data.glob("*/*.wav"))
    clips: dict[str, list] = {name: [] for name in presets}
    rates = []
    for i, path in enumerate(files):
        try:
            rec = decode(path)
            if rec.sample_rate == 4000 and i % 5:  # every 44.1 kHz recording, a fifth of the 4 kHz ones
                continue
            middle = {name: pre.run(rec)[1].samples for name, pre in presets.items()}
        except (AudioError, RecordingRejected):
            continue
        for name, samples in middle.items():
            clips[name].append(samples)
        rates.append(rec.sample_rate)
    rates = np.array(rates)
    assert (rates == 44100).sum() >= 30 and (rates == 4000).sum() >= 30
    extractor = MultiWindowLogMel()
    share = {name: _above_floor_in_upper_bands(extractor, np.stack(c)) for name, c in clips.items()}
    for name, values in share.items():
        ceiling_4k = values[rates == 4000].max()
        assert ceiling_4k < 0.01  # 4 kHz recordings: the upper bands sit at the floor either way
        separable = int((values[rates == 44100] > ceiling_4k).sum())
        if name == "full-band":
            assert separable >= 0.4 * (rates == 44100).sum()  # the shortcut is there ...
        else:
            assert separable == 0  # ... and the default preset removes it
