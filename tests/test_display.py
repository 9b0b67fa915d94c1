"""steth_hub.display: the numpy spectrogram the demo draws equals the torch extractor's, and the mel
scales equal transformers', on real recordings; computing them imports no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from steth_hub import display
from steth_hub.audio import decode
from steth_hub.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "steth_hub" / "examples"


@pytest.mark.parametrize("name", ["kauh/EP38_Asthma,E W,P R M,38,M_middle10sec.wav",
                                  "icbhi/112_1b1_Ar_sc_Meditron_middle10sec.wav"])
def test_log_mel_equals_the_torch_multiwindow_extractor(name):
    pytest.importorskip("torch")
    from steth_hub.features import MultiWindowLogMel

    recording = decode(EXAMPLES / name)
    mine = display.log_mel(recording.samples, recording.sample_rate)
    torch_mel = MultiWindowLogMel()(recording.samples[None, :], recording.sample_rate)[0].numpy()
    assert mine.shape == torch_mel.shape == (3, 128, 1 + 16000 * 10 // 160) and mine.dtype == np.float32
    assert np.abs(mine - torch_mel).max() < 0.01  # dB; float32 FFTs in two libraries
    one = display.log_mel(recording.samples, recording.sample_rate, windows_ms=(64,), f_max=4000.0)
    assert one.shape == (1, 128, 1001) and np.isfinite(one).all()
    with pytest.raises(ConfigError, match="does not fit"):
        display.log_mel(recording.samples, recording.sample_rate, target_rate=4000)


def test_mel_scales_and_filters_equal_transformers():
    audio_utils = pytest.importorskip("transformers.audio_utils")
    hz = np.array([0.0, 62.5, 999.0, 1000.0, 1700.0, 8000.0])
    for scale in display.MEL_SCALES:
        np.testing.assert_allclose(display.hz_to_mel(hz, scale), audio_utils.hertz_to_mel(hz.copy(), scale), rtol=1e-12)
        mels = display.hz_to_mel(hz, scale)
        np.testing.assert_allclose(display.mel_to_hz(mels, scale), audio_utils.mel_to_hertz(mels.copy(), scale),
                                   rtol=1e-12, atol=1e-9)
    assert float(display.hz_to_mel(1000.0)) == pytest.approx(15.0)  # scalars stay scalars
    reference = audio_utils.mel_filter_bank(num_frequency_bins=1401, num_mel_filters=128, min_frequency=0.0,
                                            max_frequency=8000.0, sampling_rate=16000, norm="slaney",
                                            mel_scale="slaney")
    np.testing.assert_allclose(display.mel_filter_bank(1401, 128, 0.0, 8000.0, 16000), reference, atol=1e-7)
    with pytest.raises(ConfigError, match="mel scale"):
        display.hz_to_mel(100.0, "bark")


def test_the_display_module_imports_no_torch():
    code = ("import sys, numpy as np\nfrom steth_hub import display\n"
            "x = display.log_mel(np.sin(np.arange(40000) / 3.0).astype('float32'), 4000)\n"
            "print(x.shape, [m for m in ('torch', 'transformers') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "(3, 128, 1001) []"
