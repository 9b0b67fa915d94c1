"""The MFCC + logistic-regression baseline on the real example recordings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from steth_hub.audio import decode
from steth_hub.clips import ClipSet
from steth_hub.errors import ConfigError, ModelError

from steth_builtin.mfcc_logreg import CONFIG_FILE, DEFAULTS, WEIGHTS_FILE, MFCCLogReg

RATE = 4000
CLIP_SECONDS = 2.5


def _clipset(paths, rate=RATE) -> ClipSet:
    """Each recording cut into back-to-back 2.5 s clips; asthma when the file name's diagnosis says so."""
    waves, labels, recs, patients, starts = [], [], [], [], []
    n = int(CLIP_SECONDS * rate)
    for path in paths:
        x = decode(path).resampled(rate).samples
        for i, start in enumerate(range(0, len(x) - n + 1, n)):
            waves.append(x[start:start + n])
            labels.append(int("asthma" in path.name.lower()))
            recs.append(path.stem)
            patients.append(path.stem.split("_")[0])
            starts.append(start / rate)
    return ClipSet(np.stack(waves), rate, labels, recs, patients, starts)


@pytest.fixture(scope="module")
def clips(example_wavs) -> ClipSet:
    return _clipset(example_wavs)


def test_features_are_mean_and_std_of_mfccs_and_deltas(clips, example_wavs):
    model = MFCCLogReg.from_config({"sample_rate": RATE})
    feats = model.features(clips.waveforms[:3])
    assert feats.shape == (3, 6 * DEFAULTS["n_mfcc"])
    assert np.isfinite(feats).all()
    n = DEFAULTS["n_mfcc"]
    assert (feats[:, 3 * n:] >= 0).all()  # the second half are standard deviations
    plain = MFCCLogReg.from_config({"sample_rate": RATE, "deltas": False, "n_mfcc": 13})
    assert plain.features(clips.waveforms[:3]).shape == (3, 26)
    # the same sound at 16 kHz gives features of the same size (the band is capped at fmax)
    up = decode(example_wavs[0]).resampled(16000).samples[: int(CLIP_SECONDS * 16000)]
    assert model.features(up[None], 16000).shape == (1, 6 * n)


def test_fit_learns_and_sets_a_validation_threshold(clips):
    model = MFCCLogReg.from_config({})
    valid_mask = np.isin(clips.patient_ids, ["EP38", "EP32"])
    history = model.fit(clips.subset(~valid_mask), clips.subset(valid_mask))
    assert model.sample_rate == RATE  # adopted from the clips
    assert history["n_features"] == 6 * DEFAULTS["n_mfcc"]
    assert history["threshold_from"] == "validation recordings"
    assert history["train"]["auroc"] == 1.0  # 120 features, a handful of recordings: it fits them
    prob = model.predict_proba(clips.waveforms)
    assert prob.dtype == np.float32 and prob.shape == (len(clips),)
    assert ((prob >= 0) & (prob <= 1)).all()
    # the threshold separates the two validation recordings (one asthma, one normal) by their mean probability
    valid = clips.subset(valid_mask)
    from steth_hub.metrics import aggregate, recording_threshold

    assert model.threshold == recording_threshold(valid.labels, model.predict_proba(valid.waveforms),
                                                  valid.recording_ids)
    # labels matter: training on flipped labels flips the ranking of the training clips
    flipped = clips.subset(~valid_mask)
    flipped.labels = 1 - flipped.labels
    other = MFCCLogReg.from_config({})
    other.fit(flipped)
    assert other.fit(flipped)["train"]["auroc"] == 1.0
    ids, rec_prob = aggregate(other.predict_proba(flipped.waveforms), flipped.recording_ids)
    _, rec_prob_model = aggregate(model.predict_proba(flipped.waveforms), flipped.recording_ids)
    assert np.corrcoef(rec_prob, rec_prob_model)[0, 1] < 0


def test_save_and_load_give_identical_probabilities_without_pickle(clips, tmp_path):
    from steth_hub.classifier import load_classifier

    model = MFCCLogReg.from_config({"n_mfcc": 13, "C": 0.5})
    model.fit(clips)
    model.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == sorted([CONFIG_FILE, WEIGHTS_FILE, "steth.json"])
    meta = json.loads((tmp_path / "m" / "steth.json").read_text())
    assert meta["plugin"] == "mfcc-logreg" and meta["sample_rate"] == RATE
    assert meta["threshold"] == pytest.approx(model.threshold)
    loaded = MFCCLogReg.from_pretrained(tmp_path / "m")
    assert loaded.config["n_mfcc"] == 13 and loaded.config["C"] == 0.5
    np.testing.assert_array_equal(loaded.predict_proba(clips.waveforms), model.predict_proba(clips.waveforms))
    via_registry = load_classifier(tmp_path / "m")  # steth.json names the plugin; the registry finds the class
    assert isinstance(via_registry, MFCCLogReg) and via_registry.threshold == pytest.approx(model.threshold)


def test_broken_saved_models_fail_clearly(clips, tmp_path):
    from safetensors.numpy import load_file, save_file

    model = MFCCLogReg.from_config({})
    model.fit(clips)
    model.save_pretrained(tmp_path / "m")
    tensors = load_file(str(tmp_path / "m" / WEIGHTS_FILE))
    del tensors["coef"]
    save_file(tensors, str(tmp_path / "m" / WEIGHTS_FILE))
    with pytest.raises(ModelError, match="missing coef"):
        MFCCLogReg.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="not a safetensors file"):
        MFCCLogReg.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "weights.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="pickle"):
        MFCCLogReg.from_pretrained(tmp_path / "m")


def test_bad_configs_and_misuse_are_refused(clips, tmp_path):
    with pytest.raises(ConfigError, match="n_mfc"):
        MFCCLogReg.from_config({"n_mfc": 20})
    with pytest.raises(ConfigError, match="n_mfcc cannot exceed n_mels"):
        MFCCLogReg.from_config({"n_mfcc": 60, "n_mels": 40})
    with pytest.raises(ConfigError, match="positive"):
        MFCCLogReg.from_config({"C": 0})
    with pytest.raises(ModelError, match="not fitted"):
        MFCCLogReg.from_config({}).predict_proba(clips.waveforms[:1])
    only_asthma = clips.subset(clips.labels == 1)
    with pytest.raises(ConfigError, match="both asthma and not-asthma"):
        MFCCLogReg.from_config({}).fit(only_asthma)
    with pytest.raises(ModelError, match="unfitted"):
        MFCCLogReg.from_config({}).save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_importing_the_plugin_module_is_light():
    code = ("import sys, steth_builtin.mfcc_logreg; "
            "print(sorted(m for m in ('sklearn', 'librosa', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
