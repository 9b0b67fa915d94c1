"""The EfficientAT encoder plugin: front end, AudioSet behaviour, strict loading, .pt conversion, training.

The pretrained weights live in ../shared/models (never in the project): tests that need them skip
with a reason when they are absent. Everything else uses tiny or randomly initialised networks.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from steth_hub.clips import ClipSet
from steth_hub.errors import ConfigError, ModelError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mn04_dir() -> Path:
    env = os.environ.get("STETH_HUB_SHARED_MODELS")
    root = Path(env) if env else REPO.parent / "shared" / "models"
    folder = root / "efficientat-mn04-as"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"needs the EfficientAT mn04 weights in {folder} (set STETH_HUB_SHARED_MODELS)")
    return folder


@pytest.fixture(scope="module")
def pretrained(mn04_dir):
    from steth_builtin.efficientat_net import audioset_labels, build_network, load_encoder_weights

    net = build_network(0.4)
    load_encoder_weights(net, mn04_dir / "model.safetensors")
    return net.eval(), audioset_labels(mn04_dir)


@pytest.fixture(scope="module")
def example_clips(example_clipset) -> ClipSet:
    return example_clipset


# --------------------------------------------------------------------------- the front end
def _reference_front_end(x: np.ndarray, sample_rate: int = 32000) -> np.ndarray:
    """EfficientAT's AugmentMelSTFT (eval mode) written independently with torch.stft, conv1d and
    transformers' Kaldi mel banks: what the numpy front end must reproduce."""
    import torch
    from transformers.audio_utils import mel_filter_bank

    w = torch.as_tensor(x, dtype=torch.float64)[:, None, :]
    w = torch.nn.functional.conv1d(w, torch.tensor([[[-0.97, 1.0]]], dtype=torch.float64)).squeeze(1)
    spec = torch.stft(w, 1024, hop_length=320, win_length=800, center=True, normalized=False,
                      window=torch.hann_window(800, periodic=False, dtype=torch.float64), return_complex=True)
    power = spec.real ** 2 + spec.imag ** 2
    banks = mel_filter_bank(num_frequency_bins=513, num_mel_filters=128, min_frequency=0.0, max_frequency=15000.0,
                            sampling_rate=sample_rate, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    mel = torch.matmul(torch.as_tensor(banks.T, dtype=torch.float64), power)
    return ((torch.log(mel + 1e-5) + 4.5) / 5.0).numpy()[:, None]


def test_front_end_reproduces_the_published_computation_on_a_real_recording(example_clips):
    from steth_builtin.efficientat_frontend import EfficientATMel

    import soxr

    fe = EfficientATMel()
    clips = example_clips.waveforms[:2]
    ours = fe(clips, example_clips.sample_rate)
    at32 = np.stack([soxr.resample(c, example_clips.sample_rate, 32000, quality="HQ") for c in clips])
    reference = _reference_front_end(at32)
    assert ours.shape == reference.shape == (2, 1, 128, fe.n_frames(clips.shape[1], example_clips.sample_rate))
    assert ours.shape[-1] == 500  # 5 s at 32 kHz: 159,999 samples after pre-emphasis, hop 320, centred frames
    assert np.abs(ours - reference).max() < 1e-4
    # the band-limited clip is empty above 2 kHz: log(1e-5) there, content below
    from steth_builtin.efficientat_frontend import band_centres

    above = band_centres() > 2500
    assert np.allclose(ours[:, 0, above, 5:-5], (np.log(1e-5) + 4.5) / 5, atol=0.05)
    assert ours[:, 0, ~above].std() > 0.3


def test_front_end_refuses_bad_settings_and_too_short_clips():
    from steth_builtin.efficientat_frontend import EfficientATMel
    from steth_hub.errors import AudioError

    with pytest.raises(ConfigError, match="f_max"):
        EfficientATMel(f_max=20000)
    with pytest.raises(AudioError, match="too short"):
        EfficientATMel()(np.zeros((1, 200), np.float32), 32000)


# --------------------------------------------------------------------------- AudioSet behaviour
def _tags(pretrained, x: np.ndarray, top: int = 10) -> tuple[list[str], np.ndarray]:
    import torch

    from steth_builtin.efficientat_frontend import EfficientATMel

    net, labels = pretrained
    with torch.no_grad():
        p = torch.sigmoid(net(torch.from_numpy(EfficientATMel()(x[None].astype(np.float32), 32000))))[0].numpy()
    order = np.argsort(-p)
    return [labels[i] for i in order[:top]], p


def test_pretrained_encoder_tags_synthesised_sounds_sensibly(pretrained):
    labels = pretrained[1]
    sr, rng = 32000, np.random.default_rng(0)
    t = np.arange(5 * sr) / sr
    sine_top, sine_p = _tags(pretrained, 0.5 * np.sin(2 * np.pi * 1000 * t))
    noise_top, noise_p = _tags(pretrained, 0.3 * rng.standard_normal(len(t)))
    clicks = np.zeros(len(t))
    burst = np.exp(-np.arange(160) / 20.0) * rng.standard_normal(160)
    for start in range(0, len(t) - 160, sr // 4):
        clicks[start:start + 160] += burst
    click_top, click_p = _tags(pretrained, 0.8 * clicks / np.abs(clicks).max())

    assert {"Sine wave", "Beep, bleep"} & set(sine_top[:2]), sine_top
    assert {"White noise", "Static", "Noise"} & set(noise_top[:2]), noise_top
    assert {"Tick", "Knock", "Tap", "Clicking", "Tick-tock"} & set(click_top), click_top
    sine, white = labels.index("Sine wave"), labels.index("White noise")
    assert sine_p[sine] > 20 * noise_p[sine] and sine_p[sine] > 20 * click_p[sine]
    assert noise_p[white] > 20 * sine_p[white] and noise_p[white] > 20 * click_p[white]


# --------------------------------------------------------------------------- strict loading
def test_loading_fails_loudly_on_a_missing_unexpected_or_mis_shaped_tensor(tmp_path, mn04_dir):
    from safetensors.torch import load_file, save_file

    from steth_builtin.efficientat_net import build_network, load_encoder_weights

    state = load_file(str(mn04_dir / "model.safetensors"))
    net = build_network(0.4)
    cases = {
        "missing": {k: v for k, v in state.items() if k != "features.4.block.2.conc_se_layers.0.fc1.weight"},
        "unexpected": dict(state, **{"features.99.weight": state["classifier.2.bias"].clone()}),
        "mis-shaped": dict(state, **{"classifier.5.weight": state["classifier.5.weight"][:10].clone()}),
    }
    for what, tensors in cases.items():
        path = tmp_path / f"{what}.safetensors"
        save_file(tensors, str(path))
        with pytest.raises(ModelError) as info:
            load_encoder_weights(net, path)
        message = str(info.value)
        assert f"1 {what}" in message and path.name in message, message
    assert "features.4.block.2.conc_se_layers.0.fc1.weight" in str(pytest.raises(
        ModelError, load_encoder_weights, net, tmp_path / "missing.safetensors").value)
    # the wrong width: every tensor mis-shaped, refused
    with pytest.raises(ModelError, match="mis-shaped"):
        load_encoder_weights(build_network(0.5), mn04_dir / "model.safetensors")
    # not safetensors, or not readable
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_encoder_weights(net, junk)
    with pytest.raises(ModelError, match="only safetensors are loaded"):
        load_encoder_weights(net, mn04_dir / "mn04_as_mAP_432.pt")
    # and the real file loads every tensor
    load_encoder_weights(net, mn04_dir / "model.safetensors")


def test_other_widths_build_the_published_layout():
    from steth_builtin.efficientat_net import build_network, width_of

    assert width_of("mn10") == 1.0 and width_of(0.4) == 0.4
    with pytest.raises(ConfigError, match="unknown EfficientAT model"):
        width_of("mn07")
    counts = {w: sum(p.numel() for p in build_network(w).parameters()) for w in (0.4, 1.0)}
    assert 0.95e6 < counts[0.4] < 1.05e6  # mn04: about 0.99 M parameters with the AudioSet head
    assert 4.5e6 < counts[1.0] < 5.0e6    # mn10: about 4.9 M


# --------------------------------------------------------------------------- .pt conversion
def test_convert_reads_a_plain_state_dict_and_refuses_anything_else(tmp_path):
    import torch
    from click.testing import CliRunner

    from steth_builtin.efficientat_net import build_network, load_encoder_weights
    from steth_hub.cli import main
    from steth_hub.convert import convert_checkpoint

    net = build_network(0.1)
    good = tmp_path / "good.pt"
    torch.save({"state_dict": net.state_dict()}, good)
    result = CliRunner().invoke(main, ["convert", str(good), str(tmp_path / "good.safetensors")])
    assert result.exit_code == 0, result.output
    assert re.search(r"wrote .*good\.safetensors: \d+ tensors", result.output)
    load_encoder_weights(build_network(0.1), tmp_path / "good.safetensors")  # every tensor fits

    mixed = tmp_path / "mixed.pt"
    torch.save({"epoch": 3, "weights": torch.zeros(2)}, mixed)
    with pytest.raises(ModelError, match="not a plain state dict.*'epoch' \\(int\\)"):
        convert_checkpoint(mixed, tmp_path / "mixed.safetensors")

    class Payload:  # an arbitrary object: the safe unpickler never runs its code
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": Payload()}, evil)
    result = CliRunner().invoke(main, ["convert", str(evil), str(tmp_path / "evil.safetensors")])
    assert result.exit_code == 2 and "refusing to read this checkpoint with the safe loader" in result.output
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "evil.safetensors").exists()
    with pytest.raises(ModelError, match="exists"):
        convert_checkpoint(good, tmp_path / "good.safetensors")


# --------------------------------------------------------------------------- training
def test_frozen_probe_keeps_the_encoder_and_saves_and_loads_exactly(tmp_path, example_clips, mn04_dir):
    from safetensors.torch import load_file

    from steth_hub.classifier import load_classifier
    from steth_hub.registry import get_registry

    cls = get_registry().get("classifier", "efficientat").load()
    model = cls.from_config({"weights": str(mn04_dir / "model.safetensors"), "mode": "frozen"})
    history = model.fit(example_clips, recipe={"seed": 1})
    assert history["probe"]["n_clips"] == len(example_clips) and 0 < model.threshold < 1
    p = model.predict_proba(example_clips.waveforms)
    asthma, other = p[example_clips.labels == 1], p[example_clips.labels == 0]
    assert asthma.mean() > other.mean()  # the probe fits its own training clips
    distributed = load_file(str(mn04_dir / "model.safetensors"))
    own = model.net.encoder.state_dict()
    assert all(np.array_equal(own[k].numpy(), v.numpy()) for k, v in distributed.items())  # frozen: unchanged
    model.save_pretrained(tmp_path / "m")
    again = load_classifier(tmp_path / "m")
    assert type(again).__name__ == "EfficientATClassifier" and again.threshold == model.threshold
    np.testing.assert_allclose(again.predict_proba(example_clips.waveforms), p, atol=1e-6)
    assert json.loads((tmp_path / "m" / "steth.json").read_text())["card_facts"]["mode"] == "frozen"


def test_fine_tuning_learns_on_real_clips_and_changes_every_tensor(tmp_path, example_clips, mn04_dir):
    from safetensors.torch import load_file

    from steth_hub.registry import get_registry

    cls = get_registry().get("classifier", "efficientat").load()
    model = cls.from_config({"weights": str(mn04_dir / "model.safetensors"), "mode": "finetune", "C": 0.01})
    recipe = {"num_train_epochs": 3, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
              "learning_rate": 1e-3, "encoder_lr_scale": 0.3, "warmup_ratio": 0.0, "logging_steps": 1,
              "save_steps": 100, "seed": 3, "disable_tqdm": True, "augment": {"time_mask": 20, "mixup_alpha": 0.2}}
    passes = []
    embeddings = model._embeddings
    model._embeddings = lambda *a, **k: passes.append(1) or embeddings(*a, **k)
    history = model.fit(example_clips, recipe=recipe, out_dir=tmp_path / "ckpt")
    losses = [e["loss"] for e in history["log_history"] if "loss" in e]
    assert history["probe"]["n_clips"] == len(example_clips) and len(losses) >= 3
    assert len(passes) == 1  # one embedding pass serves the statistics, the probe and the fine-tune
    pretrained = cls.from_config({"weights": str(mn04_dir / "model.safetensors"), "mode": "finetune", "C": 0.01})
    emb = pretrained._embeddings(pretrained.featurise(example_clips.waveforms, example_clips.sample_rate))
    np.testing.assert_allclose(model.net.embedding_mean.numpy(), emb.mean(dim=0).numpy(), rtol=1e-5, atol=1e-6)
    state = model.net.state_dict()
    distributed = load_file(str(mn04_dir / "model.safetensors"))
    unchanged = [k for k, v in distributed.items() if torch_equal(state[f"encoder.{k}"], v)]
    assert not unchanged, unchanged[:5]  # every distributed tensor (batch-norm statistics too) was trained further
    p = model.predict_proba(example_clips.waveforms)
    assert p[example_clips.labels == 1].mean() > p[example_clips.labels == 0].mean()


def test_pretrained_batch_norm_keeps_audioset_statistics_while_the_weights_learn(tmp_path, example_clips, mn04_dir):
    import torch
    from safetensors.torch import load_file

    from steth_hub.classifier import load_classifier
    from steth_hub.registry import get_registry

    cls = get_registry().get("classifier", "efficientat").load()
    model = cls.from_config({"weights": str(mn04_dir / "model.safetensors"), "mode": "finetune", "C": 0.01,
                             "batch_norm": "pretrained"})
    recipe = {"num_train_epochs": 2, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
              "learning_rate": 1e-3, "encoder_lr_scale": 0.3, "warmup_ratio": 0.0, "logging_steps": 1,
              "save_steps": 100, "seed": 3, "disable_tqdm": True, "augment": {"time_mask": 20, "mixup_alpha": 0.2}}
    model.fit(example_clips, recipe=recipe, out_dir=tmp_path / "ckpt")
    state = model.net.state_dict()
    distributed = load_file(str(mn04_dir / "model.safetensors"))
    stats = [k for k in distributed if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in distributed if k.endswith("weight") and k.startswith("features")]
    assert stats and all(torch_equal(state[f"encoder.{k}"], distributed[k]) for k in stats)
    assert not [k for k in weights if torch_equal(state[f"encoder.{k}"], distributed[k])]  # every weight learnt
    assert not model.net.training
    model.net.train()
    assert model.net.training and not any(m.training for m in model.net.modules()
                                          if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    model.net.eval()
    model.save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["net"]["batch_norm"] == "pretrained"
    loaded = load_classifier(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict_proba(example_clips.waveforms), model.predict_proba(example_clips.waveforms),
                               atol=1e-6)
    assert loaded.net.keep_batch_norm_statistics  # training it further keeps them too


def test_consistency_needs_fine_tuning(example_clips, mn04_dir, tmp_path):
    from steth_hub.registry import get_registry

    cls = get_registry().get("classifier", "efficientat").load()
    model = cls.from_config({"weights": str(mn04_dir / "model.safetensors"), "mode": "frozen"})
    with pytest.raises(ConfigError, match="consistency needs mode: finetune"):
        model.fit(example_clips, recipe={"noisy_copies": {"copies": 1, "consistency": 1.0}}, out_dir=tmp_path)


def torch_equal(a, b) -> bool:
    return bool(a.shape == b.shape and (a.float() == b.float()).all())


def test_encoder_lr_scale_needs_a_classifier_that_names_its_encoder(example_clips, tmp_path):
    from steth_hub.registry import get_registry

    ast = get_registry().get("classifier", "ast").load().from_config({"size": "tiny"})  # no encoder_parameters()
    with pytest.raises(ConfigError, match="does not say which parameters are its encoder"):
        ast.fit(example_clips, recipe={"encoder_lr_scale": 0.1, "num_train_epochs": 1}, out_dir=tmp_path)


def test_config_errors_name_the_setting():
    from steth_hub.registry import get_registry

    cls = get_registry().get("classifier", "efficientat").load()
    with pytest.raises(ConfigError, match="unknown efficientat setting.*widht"):
        cls.from_config({"widht": 0.4})
    with pytest.raises(ConfigError, match="mode 'probe'"):
        cls.from_config({"mode": "probe"})
    with pytest.raises(ConfigError, match="batch_norm.*adapt.*pretrained"):
        cls.from_config({"batch_norm": "frozen"})
    with pytest.raises(ConfigError, match="C must be a positive number"):
        cls.from_config({"C": "strong"})
    with pytest.raises(ConfigError, match="frozen efficientat model needs pretrained encoder weights"):
        cls.from_config({"mode": "frozen"})
    with pytest.raises(ModelError, match="weights file not found"):
        cls.from_config({"weights": "/nonexistent/model.safetensors"})


def test_noisy_copies_reach_the_probe_and_the_model_records_them(example_clips, mn04_dir):
    from steth_hub.registry import get_registry

    cls = get_registry().get("classifier", "efficientat").load()
    model = cls.from_config({"weights": str(mn04_dir / "model.safetensors"), "mode": "frozen"})
    history = model.fit(example_clips, recipe={"seed": 1, "noisy_copies": {"copies": 1, "noise_snr_db": [20, 30]}})
    assert history["probe"]["n_clips"] == 2 * len(example_clips)
    training = model.metadata["training"]
    assert training["noisy_copies"]["copies"] == 1 and training["n_clips"] == 2 * len(example_clips)
    assert training["n_patients"] == len(set(example_clips.patient_ids))  # copies are not new patients
