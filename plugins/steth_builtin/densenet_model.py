"""The ``densenet201`` classifier: timm's DenseNet201 on the 3-channel multi-window log-mel (the paper's baseline).

The three channels are log-mel spectrograms of one clip with 25, 100 and 175 ms windows
(``MultiWindowLogMel`` in :mod:`steth_hub.features`, ``[N, 3, 128, T]``), normalised per
channel with the training set's mean and std. The network is built with
``timm.create_model(architecture, pretrained=False, in_chans=3, num_classes=2, **model_kwargs)``:
``densenet201`` by default, any timm architecture (``densenet121``, ``resnet18``...) or a smaller
DenseNet through ``model_kwargs`` (``growth_rate``, ``block_config``...) for tests and small data.
Nothing is downloaded: ``weights`` may name a local safetensors file to start from.

A saved folder is what huggingface_hub's ``PyTorchModelHubMixin`` writes: ``config.json`` (the
plugin, the timm architecture and its arguments) and ``model.safetensors`` (the network and the
normalisation), plus ``steth.json``. Loading builds the architecture by its timm name (timm's
registry, never an import path from a file) and reads the safetensors strictly.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from steth_hub.errors import ConfigError, ModelError
from steth_hub.torch_classifier import TorchClassifier

OWN_KEYS = {"architecture", "model_kwargs", "weights", "features", "sample_rate", "preset", "drop_rate"}
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@functools.lru_cache(maxsize=None)
def _network_class():
    """``DenseNetNetwork``: the timm model plus per-channel normalisation, savable with the Hub mixin."""
    import timm
    import torch
    from huggingface_hub import PyTorchModelHubMixin

    class DenseNetNetwork(torch.nn.Module, PyTorchModelHubMixin, library_name="steth-hub",
                          tags=["steth-hub", "audio-classification", "respiratory-sounds"]):
        """A timm CNN over ``[N, 3, 128, T]`` features; ``mean``/``std`` buffers normalise each channel."""

        def __init__(self, architecture: str = "densenet201", model_kwargs: dict | None = None,
                     in_chans: int = 3, num_classes: int = 2, plugin: str = "densenet201"):
            super().__init__()
            self.architecture = architecture
            self.plugin = plugin
            self.backbone = timm.create_model(architecture, pretrained=False, in_chans=in_chans,
                                              num_classes=num_classes, **(model_kwargs or {}))
            self.register_buffer("mean", torch.zeros(1, in_chans, 1, 1))
            self.register_buffer("std", torch.ones(1, in_chans, 1, 1))

        def forward(self, features):
            return self.backbone(features)

    return DenseNetNetwork


class DenseNetClassifier(TorchClassifier):
    """timm DenseNet201 (or another timm CNN) over multi-window log-mel spectrograms."""

    plugin_name = "densenet201"
    feature_axes = {"time": 3, "freq": 2}
    predict_batch_size = 16

    def __init__(self, *, net=None, net_config: dict | None = None, features: dict | None = None, **kwargs):
        kwargs.setdefault("sample_rate", 16000)
        super().__init__(**kwargs)
        self.net = net
        self.net_config = dict(net_config or {})
        self.features_config = dict(features or {})
        self._extractor = None

    @classmethod
    def from_config(cls, config: dict) -> "DenseNetClassifier":
        """A fresh network: ``architecture`` (default densenet201), ``model_kwargs``, optional ``weights``."""
        config = copy.deepcopy(config or {})
        unknown = sorted(set(config) - OWN_KEYS)
        if unknown:
            raise ConfigError(f"unknown densenet201 setting(s): {', '.join(unknown)}",
                              fix="use: " + ", ".join(sorted(OWN_KEYS)))
        import timm

        architecture = str(config.get("architecture", "densenet201"))
        if not timm.is_model(architecture):
            raise ConfigError(f"timm has no architecture {architecture!r}",
                              fix="use a timm model name such as densenet201, densenet121 or resnet18")
        model_kwargs = dict(config.get("model_kwargs") or {})
        if "block_config" in model_kwargs:
            model_kwargs["block_config"] = tuple(model_kwargs["block_config"])
        if config.get("drop_rate") is not None:
            model_kwargs["drop_rate"] = float(config["drop_rate"])
        net_config = {"architecture": architecture, "model_kwargs": model_kwargs, "in_chans": 3, "num_classes": 2,
                      "plugin": cls.plugin_name}
        try:
            net = _network_class()(**net_config)
        except TypeError as exc:
            raise ConfigError(f"timm {architecture!r} does not accept these model_kwargs: {exc}",
                              fix="check the architecture's arguments in timm") from exc
        if config.get("weights"):
            _load_safetensors(net, Path(config["weights"]), strict=False)
        return cls(net=net, net_config=net_config, features=config.get("features"),
                   sample_rate=int(config.get("sample_rate", 16000)), preset=config.get("preset"))

    # -- features ---------------------------------------------------------------
    def extractor(self):
        if self._extractor is None:
            from steth_hub.features import MultiWindowLogMel

            self._extractor = MultiWindowLogMel(**self.features_config)
        return self._extractor

    def feature_signature(self, sample_rate: int, n_samples: int):
        return ("multiwindow-logmel", int(sample_rate), sorted((k, repr(v)) for k, v in self.features_config.items()))

    def featurise(self, waveforms, sample_rate: int):
        import numpy as np
        import torch

        return torch.as_tensor(self.extractor()(np.asarray(waveforms, dtype=np.float32), int(sample_rate)),
                               dtype=torch.float32)

    def fit_normalisation(self, features) -> None:
        """Per-channel mean and std of the training features, stored as buffers in the network."""
        mean = features.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        std = features.std(dim=(0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1)
        self.net.mean.copy_(mean.to(self.net.mean.device))
        self.net.std.copy_(std.to(self.net.std.device))

    def normalise(self, features):
        net = self.net
        return (features - net.mean.cpu()) / net.std.cpu()

    def logits(self, net, features):
        return net(features)

    # -- what the core asks a classifier (explainers, cards, warnings) ------------
    default_explainer = "gradcam"

    def input_grid(self, n_rows: int, n_cols: int):
        """Centre Hz of each mel band and centre s of each frame of the multi-window log-mel image."""
        from steth_builtin.grids import logmel_grid

        return logmel_grid(self, n_rows, n_cols)

    def gradcam_layer(self, net):
        """The last convolutional feature map: DenseNet's ``features.norm5``, else timm's last ``feature_info``."""
        from steth_builtin.gradcam import cnn_target_layer

        return cnn_target_layer(net)

    def band_hz(self):
        extractor = self.extractor()
        return float(extractor.f_min), float(extractor.f_max)

    def card_facts(self) -> dict:
        n_params = int(sum(p.numel() for p in self.net.parameters())) if self.net is not None else None
        return {"architecture": f"timm {self.net_config.get('architecture', 'densenet201')} (random initialisation)",
                "parameters": n_params,
                "front_end": "multi-window log-mel (25, 100, 175 ms windows, 128 mel bands) as a 3-channel image"}

    # -- saving -----------------------------------------------------------------
    def _save_weights(self, directory: Path) -> None:
        self.net.save_pretrained(directory, config=dict(self.net_config, features=self.features_config))

    @classmethod
    def _load_weights(cls, directory: Path, metadata: dict) -> "DenseNetClassifier":
        path = directory / CONFIG_FILE
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {CONFIG_FILE}: {exc}", path=path, fix="save the model again") from exc
        features = config.pop("features", None)
        net_config = {k: config[k] for k in ("architecture", "model_kwargs", "in_chans", "num_classes", "plugin")
                      if k in config}
        if "block_config" in (net_config.get("model_kwargs") or {}):
            net_config["model_kwargs"]["block_config"] = tuple(net_config["model_kwargs"]["block_config"])
        net = _network_class()(**net_config)
        _load_safetensors(net, directory / WEIGHTS_FILE, strict=True)
        net.eval()
        return cls(net=net, net_config=net_config, features=features,
                   sample_rate=int(metadata.get("sample_rate", 16000)))


def _load_safetensors(net: Any, path: Path, *, strict: bool) -> None:
    """Load weights from a safetensors file (never pickle); errors name the file."""
    from safetensors.torch import load_file

    if path.suffix != ".safetensors" or not path.is_file():
        raise ModelError("weights must be an existing .safetensors file", path=path,
                         fix="convert the weights with safetensors.torch.save_file")
    state = load_file(str(path))
    if not strict:  # starting weights: a plain timm state dict fits the backbone; skip mismatched shapes
        own = net.state_dict()
        prefixed = {(k if k in own else f"backbone.{k}"): v for k, v in state.items()}
        state = {k: v for k, v in prefixed.items() if k in own and own[k].shape == v.shape}
        if not state:
            raise ModelError("no tensor in the weights file fits the network", path=path,
                             fix="give weights saved from the same timm architecture")
    try:
        net.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise ModelError(f"the weights do not fit the network: {exc}", path=path,
                         fix="load them with the architecture they were saved from") from exc
