"""Frechet Audio Distance: the formula, the patient split, and the mn04 embedding on real clips."""

from __future__ import annotations

import numpy as np
import pytest

from steth_hub.generation.fad import default_encoder_path, frechet_distance, patient_halves


def test_frechet_distance_is_zero_for_one_set_and_the_squared_shift_for_a_moved_copy():
    x = np.random.default_rng(0).standard_normal((400, 6))
    x -= x.mean(axis=0)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    wide = x * 2.0  # same mean, covariance x4: trace term tr(S + 4S - 2*2S) = tr(S)
    assert frechet_distance(x, wide) == pytest.approx(float(np.trace(np.cov(x, rowvar=False))), rel=1e-6)


def test_patient_halves_share_no_patient():
    ids = np.array(["kauh:1"] * 3 + ["kauh:2"] * 2 + ["icbhi:3"] * 4 + ["kauh:4"])
    a, b = patient_halves(ids, seed=1)
    assert (a ^ b).all() and not set(ids[a]) & set(ids[b]) and a.any() and b.any()


@pytest.mark.usefixtures("one_torch_thread")
def test_real_breath_sounds_are_closer_to_each_other_than_to_noise(example_clipset):
    if not default_encoder_path().is_file():
        pytest.skip(f"needs the EfficientAT mn04 weights at {default_encoder_path()} (STETH_HUB_SHARED_MODELS)")
    from steth_hub.generation.fad import MN04Embedder, stack

    emb = MN04Embedder()
    clips = example_clipset
    a, b = patient_halves(clips.patient_ids, seed=0)
    frames = emb.frames(clips.waveforms, clips.sample_rate)
    assert frames[0].shape[1] == 384 and len(frames) == len(clips)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((int(b.sum()), clips.waveforms.shape[1])).astype(np.float32)
    from scipy.signal import butter, sosfilt

    noise = sosfilt(butter(8, 2000, fs=clips.sample_rate, output="sos"), noise).astype(np.float32)  # same band
    noise /= np.abs(noise).max(axis=1, keepdims=True)
    real_real = frechet_distance(stack(frames, a), stack(frames, b))
    real_noise = frechet_distance(stack(frames, a), stack(emb.frames(noise, clips.sample_rate)))
    assert real_real < real_noise, (real_real, real_noise)
