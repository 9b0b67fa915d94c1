"""A classifier plugin from outside steth_builtin gets explanation maps, a full card and the band warning
from what it declares (input_grid, gradcam_layer, band_hz, card_facts, default_explainer): no core file
names it. The plugin below is a separate distribution on disk, found through its entry point."""

from __future__ import annotations

import textwrap

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLUGIN = '''
import numpy as np

from steth_hub import ClassifierSpec, hookimpl
from steth_hub.torch_classifier import TorchClassifier


@hookimpl
def register_classifiers(register):
    register(ClassifierSpec(name="tiny-cnn", summary="a two-layer CNN on one log-mel channel",
                            factory="tiny_cnn_plugin:TinyCNN", requires=("torch",),
                            options={"adopts": ["tiny-cnn-checkpoint"]}))


def _net():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))


class TinyCNN(TorchClassifier):
    plugin_name = "tiny-cnn"
    feature_axes = {"time": 3, "freq": 2}
    default_explainer = "gradcam"

    def __init__(self, net=None, **kwargs):
        super().__init__(**kwargs)
        self.net = net if net is not None else _net()

    @classmethod
    def from_config(cls, config):
        return cls(sample_rate=int(config.get("sample_rate", 16000)))

    def extractor(self):
        from steth_hub.features import MultiWindowLogMel

        return MultiWindowLogMel(windows_ms=(25.0,), n_mels=32, f_max=4000.0, hop_ms=20.0)

    def feature_signature(self, sample_rate, n_samples):
        return ("tiny-cnn", int(sample_rate))

    def featurise(self, waveforms, sample_rate):
        import torch

        return torch.as_tensor(self.extractor()(np.asarray(waveforms, np.float32), int(sample_rate)), dtype=torch.float32)

    def fit_normalisation(self, features):
        pass

    def normalise(self, features):
        return features / 10.0

    def logits(self, net, features):
        return net(features)

    # what the core asks of every classifier
    def input_grid(self, n_rows, n_cols):
        from steth_hub.explanation import mel_centres

        e = self.extractor()
        return mel_centres(e.n_mels, e.f_min, e.f_max, "slaney"), np.arange(n_cols) * e.hop / e.sample_rate

    def gradcam_layer(self, net):
        return net[2]

    def band_hz(self):
        return 0.0, 1000.0

    def card_facts(self):
        return {"architecture": "two-layer test CNN", "pretraining": "none: random initialisation"}

    def _save_weights(self, directory):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(directory / "model.safetensors"))

    @classmethod
    def _load_weights(cls, directory, metadata):
        from safetensors.torch import load_file

        net = _net()
        net.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
        return cls(net=net.eval(), sample_rate=int(metadata.get("sample_rate", 16000)))
'''


@pytest.fixture
def tiny_cnn_dist(tmp_path, monkeypatch):
    """The plugin installed as distribution ``steth-tiny-cnn`` (a module and its .dist-info)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tiny_cnn_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "steth_tiny_cnn-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: steth-tiny-cnn\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[steth_hub]\ntiny-cnn = tiny_cnn_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("STETH_HUB_PLUGINS", raising=False)
    from steth_hub.registry import reset_registry

    reset_registry()
    yield site
    reset_registry()


def test_a_new_classifier_plugin_gets_maps_a_card_and_warnings_without_core_edits(tiny_cnn_dist, tmp_path,
                                                                                   example_wavs):
    import steth_hub
    from steth_hub.card import render_card
    from steth_hub.clips import ClipSet
    from steth_hub.explanation import explainers_for
    from steth_hub.preprocess import Preprocessor
    from steth_hub.registry import get_registry
    from steth_hub.screening import ScreeningPipeline

    spec = get_registry().get("classifier", "tiny-cnn")
    model = spec.load().from_config({})
    pre = Preprocessor("excerpt-10s")
    wav = next(p for p in example_wavs if "EP38" in p.name)
    other = next(p for p in example_wavs if "DP72" in p.name)
    sets = [ClipSet.from_clips(pre.run(p, p.stem), [label] * 3, [p.stem] * 3) for p, label in ((wav, 1), (other, 0))]
    model.preset = pre.preset.to_dict()
    model.fit(ClipSet.concatenate(sets), recipe={"num_train_epochs": 1, "per_device_train_batch_size": 6,
                                                 "gradient_accumulation_steps": 1, "save_steps": 100,
                                                 "disable_tqdm": True}, out_dir=tmp_path / "ckpt")
    model.save_pretrained(tmp_path / "model")

    loaded = steth_hub.from_pretrained(tmp_path / "model")
    assert type(loaded).__name__ == "TinyCNN"
    assert set(explainers_for(loaded)) == {"gradcam", "integrated-gradients"}  # not attention (AST only)
    for explainer in ("gradcam", "integrated-gradients"):
        e = steth_hub.explain(wav, model=loaded, explainer=explainer)
        assert e.explainer == explainer and e.map.max() == pytest.approx(1.0) and e.map.shape == e.spectrogram.shape
        # the maps sit on the plugin's own grid: nothing above its 4 kHz mel range
        assert e.clip_maps.frequencies.max() < 4000.0
    assert steth_hub.explain(wav, model=loaded).explainer == "gradcam"  # its declared default

    card = render_card(tmp_path / "model")
    assert "two-layer test CNN" in card and "| pretraining | none: random initialisation |" in card
    assert "`tiny-cnn`" in card and "steth-tiny-cnn" in card  # the distribution that provides it
    assert ScreeningPipeline(loaded).top_hz == 1000.0  # band warnings follow the declared band


def test_a_plugin_declares_the_plain_checkpoints_it_adopts(tiny_cnn_dist, tmp_path):
    """Hub adoption of a folder without steth.json asks the plugins, not a name in the core."""
    import json

    from steth_hub.errors import ModelError
    from steth_hub.hub import adopting_plugins, adoption_metadata

    assert adopting_plugins() == {"audio-spectrogram-transformer": "ast", "tiny-cnn-checkpoint": "tiny-cnn"}
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny-cnn-checkpoint",
                                                    "id2label": {"0": "not_asthma", "1": "asthma"}}))
    meta = adoption_metadata(folder)
    assert meta["plugin"] == "tiny-cnn" and meta["adopted"] is True
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "id2label": {"0": "no", "1": "asthma"}}))
    with pytest.raises(ModelError, match="'audio-spectrogram-transformer', 'tiny-cnn-checkpoint'"):
        adoption_metadata(folder)
