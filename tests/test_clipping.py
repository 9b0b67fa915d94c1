"""Clipping detectors on real recordings, on the same recordings clipped on purpose, and the paper's rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steth_hub.audio import decode
from steth_hub.clipping import (
    ClippingCheck,
    detect_clipping,
    full_scale_share,
    paper_p95_share,
    plateau_share,
    simulate_clipping,
)
from steth_hub.clips import Clip
from steth_hub.errors import AudioError, ConfigError, RecordingRejected

# A real ICBHI excerpt shipped as an example: its recorder clipped (runs of 257 samples at full scale).
CLIPPED_EXAMPLE = "icbhi/112_1b1_Ar_sc_Meditron_middle10sec.wav"
# Really clipped ICBHI excerpts in the shared data (flat tops of tens to hundreds of samples at full scale).
SHARED_CLIPPED = {"112_1b1_Ar_sc_Meditron_middle10sec.wav", "114_1b4_Ar_mc_AKGC417L_middle10sec.wav",
                  "138_2p2_Ar_mc_AKGC417L_middle10sec.wav", "147_2b2_Ar_mc_AKGC417L_middle10sec.wav"}


@pytest.fixture(scope="module")
def clean_recordings(example_wavs):
    """Every shipped example and test recording except the one that is really clipped."""
    paths = [p for p in example_wavs if not str(p).endswith(CLIPPED_EXAMPLE)]
    paths += sorted((Path(__file__).parent / "data").glob("*/*.wav"))
    return [decode(p) for p in paths]


def test_plateau_flags_no_clean_real_recording(clean_recordings):
    assert len(clean_recordings) >= 8
    for rec in clean_recordings:
        result = detect_clipping(rec.samples)
        assert not result.clipped, f"{rec.source}: {result.describe()}"


def test_plateau_flags_the_really_clipped_example(examples_dir):
    rec = decode(examples_dir / CLIPPED_EXAMPLE)
    result = detect_clipping(rec.samples)
    assert result.clipped and result.method == "plateau"
    assert 0.02 < result.share < 0.05  # 3.5 % of its samples sit on flat tops at full scale


@pytest.mark.parametrize("gain", [4, 6, 10])
def test_real_recordings_clipped_on_purpose_are_flagged(clean_recordings, gain):
    for rec in clean_recordings:
        clipped = simulate_clipping(rec.samples, gain)  # x gain, cut at +-1, 16-bit
        assert detect_clipping(clipped, "plateau").clipped, rec.source
        assert detect_clipping(clipped, "full-scale").clipped, rec.source


def test_plateau_survives_a_gain_change_after_clipping_full_scale_does_not(clean_recordings):
    rec = clean_recordings[0]
    clipped_then_quieter = simulate_clipping(rec.samples, 6) * 0.5
    assert detect_clipping(clipped_then_quieter, "plateau").clipped
    assert not detect_clipping(clipped_then_quieter, "full-scale").clipped


def test_one_polarity_clipping_is_caught(clean_recordings):
    x = clean_recordings[1].samples / np.abs(clean_recordings[1].samples).max()
    level = float(np.quantile(x, 0.995))  # flatten the top 0.5 % of positive excursions only
    one_sided = np.minimum(x, level).astype(np.float32)
    assert one_sided.min() < -level  # the negative peak is larger and untouched
    assert plateau_share(one_sided) > 0.001
    assert detect_clipping(one_sided).clipped


def test_single_sample_at_a_normalised_peak_is_not_clipping(clean_recordings):
    x = clean_recordings[2].samples
    normalised = x / np.abs(x).max()  # one sample exactly at 1.0, as peak-normalised files have
    assert full_scale_share(normalised) > 0
    assert not detect_clipping(normalised).clipped


def test_paper_rule_rejects_every_recording(clean_recordings, examples_dir):
    for rec in clean_recordings:
        share = paper_p95_share(rec.samples)
        assert 0.049 <= share <= 0.06, rec.source  # ~5 % always lie at or above their own 95th percentile
        assert detect_clipping(rec.samples, "paper-p95").clipped
    # even a pure tone, which has no clipping at all
    tone = np.sin(2 * np.pi * 200 * np.arange(16000) / 16000).astype(np.float32) * 0.3
    assert detect_clipping(tone, "paper-p95").clipped
    assert not detect_clipping(tone, "plateau").clipped


def test_clipping_step_rejects_with_code_and_fix(examples_dir):
    rec = decode(examples_dir / CLIPPED_EXAMPLE)
    step = ClippingCheck()
    with pytest.raises(RecordingRejected) as info:
        step([Clip(rec.samples, rec.sample_rate, "icbhi:112")])
    assert info.value.code == "clipped"
    assert "icbhi:112" in str(info.value) and "plateau" in str(info.value) and info.value.fix
    clean = decode(examples_dir / "icbhi/113_1b1_Ar_sc_Litt3200_middle10sec.wav")
    clips = [Clip(clean.samples, clean.sample_rate, "icbhi:113")]
    assert step(clips) is clips


def test_clipping_step_parameters_are_checked():
    assert ClippingCheck().params == {"method": "plateau", "max_share": 0.001, "min_run": 3, "tolerance": 1e-4}
    assert ClippingCheck("paper-p95").params == {"method": "paper-p95", "max_share": 0.02, "percentile": 95.0}
    with pytest.raises(ConfigError, match="unknown clipping method"):
        ClippingCheck("loudness")
    with pytest.raises(ConfigError, match="takes no parameter"):
        ClippingCheck("paper-p95", min_run=5)
    with pytest.raises(ConfigError, match="max_share"):
        ClippingCheck(max_share=2.0)


def test_shared_recordings(shared_data):
    """All 273 shared excerpts: no KAUH one is flagged; the four really clipped ICBHI ones are;
    every one clipped on purpose (x4) is; the paper's rule flags all."""
    flagged, n = set(), 0
    for path in sorted(shared_data.glob("*/*.wav")):
        try:
            rec = decode(path)
        except AudioError:  # six KAUH files are silent; the corpus importer reports them
            continue
        n += 1
        if detect_clipping(rec.samples).clipped:
            flagged.add(path.name)
        assert detect_clipping(simulate_clipping(rec.samples, 4)).clipped, path.name
        assert detect_clipping(rec.samples, "paper-p95").clipped, path.name
    assert n >= 260
    assert flagged == SHARED_CLIPPED
