"""The AST and DenseNet classifier plugins on real clips: they learn, save, load and refuse bad settings.

Clips come from the real recordings shipped in ``steth_hub/examples`` (KAUH asthma and
not-asthma, ICBHI COPD), cut with the default preset. Models are tiny configs built here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from steth_hub.classifier import load_classifier
from steth_hub.clips import ClipSet
from steth_hub.errors import ConfigError, ModelError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread (conftest.py)

FAST = {"warmup_steps": 0, "gradient_accumulation_steps": 1, "per_device_train_batch_size": 8,
        "logging_steps": 1, "save_steps": 1000, "disable_tqdm": True, "weight_decay": 0.0}
TINY_DENSENET = {"architecture": "densenet121", "model_kwargs": {"growth_rate": 8, "block_config": [2, 2]}}


def _label(path) -> int:
    return int("asthma" in path.name.lower())


@pytest.fixture(scope="module")
def example_clips(example_wavs) -> ClipSet:
    """Every shipped example cut by the default preset (3 clips each), labelled from its file name."""
    from steth_hub.preprocess import Preprocessor

    from steth_hub.errors import RecordingRejected

    pre = Preprocessor("excerpt-10s")
    sets = []
    for path in example_wavs:
        try:
            clips = pre.run(path, path.stem)
        except RecordingRejected:  # one shipped ICBHI example is clipped: a corpus leaves it out
            continue
        sets.append(ClipSet.from_clips(clips, [_label(path)] * len(clips), [path.stem.split("_")[0]] * len(clips)))
    clips = ClipSet.concatenate(sets)
    assert len(clips) >= 15 and set(clips.labels) == {0, 1}
    return clips


def _losses(history) -> list[float]:
    return [float(e["loss"]) for e in history["log_history"] if "loss" in e]


# --------------------------------------------------------------------------- registration
def test_builtin_classifiers_are_registered_without_heavy_imports():
    code = ("import sys, steth_builtin.classifiers\n"
            "from steth_hub.registry import get_registry\n"
            "names = get_registry().names('classifier')\n"
            "heavy = [m for m in ('torch', 'transformers', 'timm', 'sklearn') if m in sys.modules]\n"
            "print(names, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'ast'" in out and "'densenet201'" in out and "'mfcc-logreg'" in out
    assert out.strip().endswith("[]"), out


def test_registered_factories_are_the_classifier_classes():
    from steth_hub.registry import get_registry

    from steth_builtin.ast_model import ASTClassifier
    from steth_builtin.densenet_model import DenseNetClassifier

    reg = get_registry()
    assert reg.get("classifier", "ast").load() is ASTClassifier
    assert reg.get("classifier", "densenet201").load() is DenseNetClassifier


# --------------------------------------------------------------------------- AST
def test_ast_config_errors_name_the_setting():
    from steth_builtin.ast_model import ASTClassifier

    with pytest.raises(ConfigError, match="hiden_size"):
        ASTClassifier.from_config({"hiden_size": 32})
    with pytest.raises(ConfigError, match="huge"):
        ASTClassifier.from_config({"size": "huge"})


def test_ast_sizes_follow_the_presets():
    from steth_builtin.ast_model import SIZES, ASTClassifier

    model = ASTClassifier.from_config({"size": "tiny", "num_hidden_layers": 1})
    assert model.model_config["hidden_size"] == SIZES["tiny"]["hidden_size"]
    assert model.model_config["num_hidden_layers"] == 1
    assert ASTClassifier.from_config({"size": "base"}).model_config["hidden_size"] == 768


@pytest.mark.slow
def test_tiny_ast_overfits_real_clips_and_round_trips(example_clips, tmp_path):
    """The training loop truly learns: a tiny AST fits the example clips; save/load changes nothing."""
    from steth_builtin.ast_model import ASTClassifier

    model = ASTClassifier.from_config({"size": "tiny"})
    recipe = dict(FAST, num_train_epochs=25, learning_rate=2e-3, seed=0)
    history = model.fit(example_clips, None, recipe, tmp_path / "run")
    losses = _losses(history)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    probs = model.predict_proba(example_clips.waveforms)
    assert probs.shape == (len(example_clips),) and np.all((probs >= 0) & (probs <= 1))
    assert ((probs >= 0.5) == example_clips.labels).mean() >= 0.8
    assert probs[example_clips.labels == 1].mean() > probs[example_clips.labels == 0].mean() + 0.2
    assert 0.0 <= model.threshold <= 1.0 and history["threshold_from"] == "training recordings"

    model.save_pretrained(tmp_path / "model")
    names = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert names == ["config.json", "model.safetensors", "preprocessor_config.json", "steth.json"]
    again = load_classifier(tmp_path / "model")
    assert type(again) is ASTClassifier and again.threshold == pytest.approx(model.threshold)
    np.testing.assert_allclose(again.predict_proba(example_clips.waveforms), probs, atol=1e-6)

    # a standard transformers checkpoint: plain AutoModel + its feature extractor give the same numbers
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    net = AutoModelForAudioClassification.from_pretrained(tmp_path / "model")
    extractor = AutoFeatureExtractor.from_pretrained(tmp_path / "model")
    assert net.config.id2label == {0: "not_asthma", 1: "asthma"}
    inputs = extractor(list(example_clips.waveforms), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        plain = torch.softmax(net(**inputs).logits, dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(plain, probs, atol=1e-5)


FRONT_END_4K = {"size": "tiny", "num_hidden_layers": 1, "front_end": {"sampling_rate": 4000, "num_mel_bins": 64},
                "frequency_stride": 8, "time_stride": 8}


def test_ast_front_end_matched_to_the_band_limit(example_clips):
    """A 4 kHz, 64-bin front end: every mel band holds signal on real band-limited clips (no empty filters)."""
    import warnings

    import torch
    from transformers import ASTFeatureExtractor

    from steth_builtin.ast_model import ASTClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transformers warns about all-zero mel filters
        filters = ASTFeatureExtractor(sampling_rate=4000, num_mel_bins=64).mel_filters
    assert filters.shape[1] == 64 and (filters.sum(0) > 0).all()
    model = ASTClassifier.from_config(FRONT_END_4K)
    x = model.featurise(example_clips.waveforms, example_clips.sample_rate)
    assert model.frames_for(example_clips.waveforms.shape[1], example_clips.sample_rate) == 123  # 5 s at 4 kHz
    assert x.shape == (len(example_clips), 123, 64) and torch.isfinite(x).all()
    spread = x.std(dim=(0, 1))
    assert (spread > 0.1).all(), spread  # at 16 kHz, 128 bins: the bands above 2 kHz sit at a constant floor
    wide = ASTClassifier.from_config({"size": "tiny"}).featurise(example_clips.waveforms[:3], 16000)
    assert (wide.std(dim=(0, 1)) < 1e-3).sum() > 30


def test_ast_features_do_not_change_where_torchaudio_would_be_used(example_clips, monkeypatch):
    """With torchaudio, ASTFeatureExtractor frames in milliseconds: steth-hub keeps the trained numpy framing."""
    import torch
    from transformers.models.audio_spectrogram_transformer import feature_extraction_audio_spectrogram_transformer as fe

    from steth_builtin.ast_model import ASTClassifier

    model = ASTClassifier.from_config(FRONT_END_4K)
    clips = example_clips.waveforms[:4]
    expected = model.featurise(clips, 16000)
    monkeypatch.setattr(fe, "is_speech_available", lambda: True)
    assert torch.equal(model.featurise(clips, 16000), expected)


@pytest.mark.slow
def test_ast_at_4khz_saves_a_checkpoint_plain_transformers_reproduces(example_clips, example_wavs, tmp_path):
    """The saved folder asks for 4 kHz input; transformers' extractor and pipeline give steth-hub's numbers."""
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    from steth_builtin.ast_model import ASTClassifier
    from steth_hub.audio import decode, resample

    model = ASTClassifier.from_config(FRONT_END_4K)
    model.fit(example_clips, None, dict(FAST, num_train_epochs=3, learning_rate=2e-3, seed=0), tmp_path / "run")
    probs = model.predict_proba(example_clips.waveforms)
    model.save_pretrained(tmp_path / "model")
    extractor = AutoFeatureExtractor.from_pretrained(tmp_path / "model")
    assert (extractor.sampling_rate, extractor.num_mel_bins, extractor.max_length) == (4000, 64, 123)
    net = AutoModelForAudioClassification.from_pretrained(tmp_path / "model")
    at_4k = [resample(w, 16000, 4000) for w in example_clips.waveforms]
    inputs = extractor(at_4k, sampling_rate=4000, return_tensors="pt")
    with torch.no_grad():
        plain = torch.softmax(net(**inputs).logits, dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(plain, probs, atol=1e-5)
    kauh = next(p for p in example_wavs if p.parent.name == "kauh")
    rec = decode(kauh)
    assert rec.sample_rate == 4000  # KAUH is recorded at 4 kHz: the pipeline needs no resampling
    scores = pipeline("audio-classification", model=str(tmp_path / "model"))(
        {"raw": rec.samples[:20000], "sampling_rate": 4000}, top_k=None)
    assert {s["label"] for s in scores} == {"asthma", "not_asthma"}


def test_ast_from_a_local_checkpoint_gets_a_two_class_head(tmp_path):
    from transformers import ASTConfig, ASTForAudioClassification

    from steth_builtin.ast_model import ASTClassifier

    cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    max_length=100, frequency_stride=16, time_stride=16, num_labels=527)
    ASTForAudioClassification(cfg).save_pretrained(tmp_path / "ckpt")
    model = ASTClassifier.from_config({"pretrained": str(tmp_path / "ckpt")})
    assert model.net.config.num_labels == 2 and model.max_length == 100
    assert model.net.config.id2label[1] == "asthma"
    clips = np.random.default_rng(0).normal(0, 0.1, (2, 16000)).astype(np.float32)
    feats = model.featurise(clips, 16000)
    assert tuple(feats.shape) == (2, 100, 128)


def test_loading_an_ast_checkpoint_prints_no_progress_bar_and_keeps_the_users_setting(tmp_path, capfd,
                                                                                      monkeypatch):
    from transformers import ASTConfig, ASTForAudioClassification
    from transformers.utils import logging as tf_logging

    import steth_hub
    from steth_builtin.ast_model import ASTClassifier

    monkeypatch.setattr(tf_logging, "_tqdm_active", True)  # bars on, whatever HF_HUB_DISABLE_PROGRESS_BARS says
    hook = tf_logging.set_tqdm_hook(None)
    monkeypatch.setattr(tf_logging, "_tqdm_hook", hook)
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    max_length=100, frequency_stride=16, time_stride=16, num_labels=527)
    ASTForAudioClassification(cfg).save_pretrained(tmp_path / "ckpt")
    capfd.readouterr()
    steth_hub.from_pretrained("steth/ast-asthma")  # the embedded model: a saved steth-hub folder
    ASTClassifier.from_config({"pretrained": str(tmp_path / "ckpt")})  # a transformers checkpoint
    err = capfd.readouterr().err
    assert "Loading weights" not in err
    assert tf_logging.is_progress_bar_enabled() and tf_logging._tqdm_hook is hook


def test_ast_remote_code_needs_a_pinned_revision(tmp_path):
    from steth_builtin.ast_model import ASTClassifier

    with pytest.raises(ConfigError, match="pinned revision"):
        ASTClassifier.from_config({"pretrained": "someone/ast", "trust_remote_code": True, "revision": "main"})


def test_ast_missing_checkpoint_is_a_model_error(tmp_path, hf_cache):
    from steth_builtin.ast_model import ASTClassifier

    with pytest.raises(ModelError, match="cannot load the AST checkpoint"):
        ASTClassifier.from_config({"pretrained": "nobody/not-in-the-cache"})


def test_untrained_ast_cannot_be_saved(tmp_path):
    from steth_builtin.ast_model import ASTClassifier

    with pytest.raises(ModelError, match="never trained"):
        ASTClassifier.from_config({"size": "tiny"}).save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- DenseNet
def test_densenet_config_errors():
    from steth_builtin.densenet_model import DenseNetClassifier

    with pytest.raises(ConfigError, match="no architecture"):
        DenseNetClassifier.from_config({"architecture": "densenet999"})
    with pytest.raises(ConfigError, match="does not accept"):
        DenseNetClassifier.from_config({"architecture": "densenet121", "model_kwargs": {"wings": 2}})
    with pytest.raises(ConfigError, match="unknown densenet201 setting"):
        DenseNetClassifier.from_config({"layers": 3})


def test_densenet201_is_the_default_architecture():
    from steth_builtin.densenet_model import DenseNetClassifier

    model = DenseNetClassifier.from_config({})
    assert model.net_config["architecture"] == "densenet201"
    assert sum(p.numel() for p in model.net.parameters()) > 18_000_000


@pytest.mark.slow
def test_tiny_densenet_learns_real_clips_and_round_trips(example_clips, tmp_path):
    from steth_builtin.densenet_model import DenseNetClassifier

    model = DenseNetClassifier.from_config(TINY_DENSENET)
    recipe = dict(FAST, num_train_epochs=25, learning_rate=5e-3, seed=0)
    history = model.fit(example_clips, None, recipe, tmp_path / "run")
    losses = _losses(history)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    probs = model.predict_proba(example_clips.waveforms)
    assert ((probs >= 0.5) == example_clips.labels).mean() >= 0.9

    model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["plugin"] == "densenet201" and config["architecture"] == "densenet121"
    again = load_classifier(tmp_path / "model")
    np.testing.assert_allclose(again.predict_proba(example_clips.waveforms), probs, atol=1e-6)


def test_densenet_refuses_pickle_and_mismatched_weights(tmp_path):
    import torch
    from safetensors.torch import save_file

    from steth_builtin.densenet_model import DenseNetClassifier

    model = DenseNetClassifier.from_config(TINY_DENSENET)
    model.save_pretrained(tmp_path / "model")
    torch.save({}, tmp_path / "model" / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickle"):
        load_classifier(tmp_path / "model")
    save_file({"nothing.like.this": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelError, match="fits the network"):
        DenseNetClassifier.from_config(dict(TINY_DENSENET, weights=str(tmp_path / "w.safetensors")))
    with pytest.raises(ModelError, match="safetensors"):
        DenseNetClassifier.from_config(dict(TINY_DENSENET, weights=str(tmp_path / "model" / "pytorch_model.bin")))


def test_densenet_starting_weights_from_safetensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    from steth_builtin.densenet_model import DenseNetClassifier

    donor = DenseNetClassifier.from_config(TINY_DENSENET)
    state = {k.removeprefix("backbone."): v for k, v in donor.net.state_dict().items() if k.startswith("backbone.")}
    save_file(state, str(tmp_path / "timm.safetensors"))
    model = DenseNetClassifier.from_config(dict(TINY_DENSENET, weights=str(tmp_path / "timm.safetensors")))
    for name, tensor in model.net.backbone.state_dict().items():
        assert torch.equal(tensor, donor.net.backbone.state_dict()[name])
