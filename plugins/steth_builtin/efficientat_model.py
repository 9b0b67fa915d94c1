"""The ``efficientat`` classifier: an AudioSet-pretrained EfficientAT MobileNetV3 with an asthma head.

The encoder (:mod:`steth_builtin.efficientat_net`, ``mn04`` by default) reads EfficientAT's own
front end (:mod:`steth_builtin.efficientat_frontend`: 32 kHz, 128 Kaldi mel bands, ``[N, 1, 128, T]``).
A clip's embedding is the mean and the maximum over frequency and time of the last feature map
(2 x 384 values for mn04) and the 527 AudioSet logits; the embedding is standardised with the
training clips' mean and spread (buffers inside the network) and a linear layer gives the two
logits (not asthma / asthma).

Two modes (``mode`` in the config, or the recipe):

* ``frozen``: the encoder stays as pretrained; the head is an L2-regularised logistic regression
  (``C``, class-balanced) on the standardised embeddings, copied into the linear layer. This is the
  strong floor. A model trained this way holds the third-party tensors unchanged: use it for
  comparisons, never ship it (the package ships only weights this project trained).
* ``finetune``: the frozen probe first (the head starts where the probe ended: "LP-FT"), then the
  whole network is trained with the project's Trainer loop (:func:`steth_hub.train.fit_torch`),
  the encoder at ``encoder_lr_scale`` times the head's learning rate, with the recipe's SpecAugment
  masks and mixup. ``batch_norm``: ``adapt`` (the default) lets the batch-norm statistics follow
  the training clips; ``pretrained`` keeps AudioSet's statistics while every weight is trained
  (the usual practice for small data). On the shared recordings, fine-tuning moved the weights by
  about 0.01-0.1% but the batch-norm variances by about 22%, and the adapted models were far more
  sensitive to added noise than the frozen encoder (configs/README.md, "Pretrained statistics").

Nothing is downloaded: ``weights`` names the published encoder as a local safetensors file
(``../shared/models/efficientat-mn04-as/model.safetensors``), loaded strictly. A saved folder is
``config.json`` (architecture, front end, embedding), ``model.safetensors`` (every tensor),
``steth.json``; loading builds the architecture from ``config.json`` and reads the tensors strictly.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from steth_hub.errors import ConfigError, ModelError
from steth_hub.torch_classifier import TorchClassifier

OWN_KEYS = {"encoder", "width_mult", "weights", "mode", "C", "audioset_logits", "front_end", "sample_rate",
            "preset", "dropout", "batch_norm"}
MODES = ("frozen", "finetune")
#: what fine-tuning does with the encoder's batch-norm statistics
BATCH_NORM = ("adapt", "pretrained")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: EfficientAT, credited in every card of a model built on it
ATTRIBUTION = ("EfficientAT MobileNetV3 pretrained on AudioSet (Schmid, Koutini, Widmer, ICASSP 2023; "
               "github.com/fschmid56/EfficientAT; MIT licence, Copyright (c) 2022 Florian Schmid)")


def _network_class():
    import torch
    from torch import nn

    from steth_builtin.efficientat_net import build_network

    class EfficientATAsthma(nn.Module):
        """Encoder -> [mean, max pooled feature map, AudioSet logits] -> standardise -> Linear(2)."""

        def __init__(self, width_mult: float = 0.4, audioset_logits: bool = True, dropout: float = 0.0,
                     batch_norm: str = "adapt"):
            super().__init__()
            self.keep_batch_norm_statistics = batch_norm == "pretrained"
            self.encoder = build_network(width_mult)
            if not audioset_logits:  # no AudioSet head at all: nothing kept untrained
                self.encoder.classifier = nn.Identity()
            self.audioset_logits = bool(audioset_logits)
            width = 2 * self.encoder.embedding_channels + (self.encoder.classifier[-1].out_features
                                                           if audioset_logits else 0)
            self.register_buffer("embedding_mean", torch.zeros(width))
            self.register_buffer("embedding_std", torch.ones(width))
            self.dropout = nn.Dropout(float(dropout))
            self.head = nn.Linear(width, 2)

        def embed(self, x):
            fmap = self.encoder.features(x)
            parts = [fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))]
            if self.audioset_logits:
                parts.append(self.encoder.classifier(fmap))
            return torch.cat(parts, dim=1)

        def forward(self, x):
            z = (self.embed(x) - self.embedding_mean) / self.embedding_std
            return self.head(self.dropout(z))

        def train(self, mode: bool = True):
            """As nn.Module.train; with ``batch_norm: pretrained`` the batch-norm layers stay in eval mode
            (their running statistics are used and never updated; their scale and shift still learn)."""
            super().train(mode)
            if mode and self.keep_batch_norm_statistics:
                for module in self.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
            return self

    return EfficientATAsthma


class EfficientATClassifier(TorchClassifier):
    """AudioSet-pretrained EfficientAT MobileNetV3 (mn04 by default) with a linear asthma head."""

    plugin_name = "efficientat"
    feature_axes = {"time": 3, "freq": 2}
    predict_batch_size = 16
    #: what the explanation picture may call the model's input
    input_description = "EfficientAT log-mel (32 kHz, 128 Kaldi mel bands 0-15 kHz, 10 ms hop)"

    def __init__(self, *, net=None, net_config: dict | None = None, front_end: dict | None = None,
                 mode: str = "finetune", C: float = 0.05, **kwargs):
        kwargs.setdefault("sample_rate", 16000)
        super().__init__(**kwargs)
        self.net = net
        self.net_config = dict(net_config or {})
        self.front_end_config = dict(front_end or {})
        self.mode = mode
        self.C = float(C)
        self._front_end = None
        self._normalised_for = None  # set by fit between the probe and the fine-tune (see fit_normalisation)

    # -- building ---------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict) -> "EfficientATClassifier":
        """``encoder`` (mn04...) or ``width_mult``; ``weights`` (local safetensors); ``mode``; ``C``;
        ``audioset_logits``; ``batch_norm`` (``adapt`` or ``pretrained``, for fine-tuning)."""
        from steth_builtin.efficientat_net import load_encoder_weights, width_of

        config = copy.deepcopy(config or {})
        unknown = sorted(set(config) - OWN_KEYS)
        if unknown:
            raise ConfigError(f"unknown efficientat setting(s): {', '.join(unknown)}",
                              fix="use: " + ", ".join(sorted(OWN_KEYS)))
        mode = str(config.get("mode", "finetune"))
        if mode not in MODES:
            raise ConfigError(f"efficientat mode {mode!r} is not one of {', '.join(MODES)}",
                              fix="use mode: frozen (linear probe) or finetune")
        try:
            C = float(config.get("C", 0.05))
        except (TypeError, ValueError):
            C = -1.0
        if not np.isfinite(C) or C <= 0:
            raise ConfigError(f"efficientat C must be a positive number, got {config.get('C')!r}",
                              fix="e.g. C: 0.05 (smaller: stronger regularisation)")
        batch_norm = str(config.get("batch_norm", "adapt"))
        if batch_norm not in BATCH_NORM:
            raise ConfigError(f"efficientat batch_norm {config.get('batch_norm')!r} is not one of {', '.join(BATCH_NORM)}",
                              fix="use batch_norm: adapt (statistics follow the training clips) or pretrained "
                                  "(AudioSet's statistics kept while the weights are fine-tuned)")
        width = width_of(config.get("width_mult", config.get("encoder", "mn04")))
        net_config = {"width_mult": width, "audioset_logits": bool(config.get("audioset_logits", True)),
                      "dropout": float(config.get("dropout", 0.0)), "batch_norm": batch_norm}
        net = _network_class()(**net_config)
        if config.get("weights"):
            load_encoder_weights(net.encoder, Path(config["weights"]).expanduser())
        elif mode == "frozen":
            raise ConfigError("a frozen efficientat model needs pretrained encoder weights",
                              fix="set model.weights to the encoder's model.safetensors "
                                  "(../shared/models/efficientat-mn04-as/model.safetensors)")
        model = cls(net=net, net_config=net_config, front_end=config.get("front_end"), mode=mode, C=C,
                    sample_rate=int(config.get("sample_rate", 16000)), preset=config.get("preset"))
        model.metadata["encoder"] = {"architecture": f"EfficientAT MobileNetV3, width_mult {width}",
                                     "pretrained": bool(config.get("weights")),
                                     "weights_file": Path(config["weights"]).name if config.get("weights") else None}
        return model

    # -- features ---------------------------------------------------------------
    def front_end(self):
        if self._front_end is None:
            from steth_builtin.efficientat_frontend import EfficientATMel

            self._front_end = EfficientATMel(**self.front_end_config)
        return self._front_end

    def feature_signature(self, sample_rate: int, n_samples: int):
        return ("efficientat-mel", int(sample_rate), sorted(self.front_end().config().items()))

    def featurise(self, waveforms, sample_rate: int):
        import torch

        return torch.as_tensor(self.front_end()(np.asarray(waveforms, dtype=np.float32), int(sample_rate)))

    def fit_normalisation(self, features) -> None:
        """Mean and spread of the training clips' embeddings (the pretrained encoder, in evaluation mode).

        Skipped once after :meth:`fit` has set them from the same training clips (the probe needs
        them first, and the encoder has not changed since): one embedding pass, not three.
        """
        if getattr(self, "_normalised_for", None) == len(features):
            self._normalised_for = None
            return
        self._set_normalisation(self._embeddings(features))

    def _set_normalisation(self, emb) -> None:
        self.net.embedding_mean.copy_(emb.mean(dim=0))
        self.net.embedding_std.copy_(emb.std(dim=0).clamp_min(1e-4))

    def normalise(self, features):
        return features  # the front end's own (x + 4.5) / 5; the embedding is standardised in the network

    def logits(self, net, features):
        return net(features)

    def head_parameters(self, net):
        return list(net.head.parameters())

    def encoder_parameters(self, net):
        return list(net.encoder.parameters())

    def _embeddings(self, features, batch: int = 32):
        import torch

        net = self.net
        was = net.training
        net.eval()
        with torch.no_grad():
            out = torch.cat([net.embed(features[i:i + batch]) for i in range(0, len(features), batch)])
        net.train(was)
        return out

    # -- training -----------------------------------------------------------------
    def fit(self, train, valid=None, recipe: dict | None = None, out_dir=None, **kwargs) -> dict:
        """The linear probe; then, in ``finetune`` mode, the whole network with the Trainer loop."""
        import time

        from steth_hub.feature_cache import featurise_clipset

        if int(train.sample_rate) != self.sample_rate:
            self.sample_rate = int(train.sample_rate)
        recipe = dict(recipe or {})
        noisy = None
        if self.mode == "frozen" and (recipe.get("noisy_copies") or {}).get("consistency"):
            raise ConfigError("noisy_copies.consistency needs mode: finetune (a frozen probe is not trained in pairs)",
                              fix="drop consistency, or set model.mode: finetune")
        if recipe.get("noisy_copies"):  # the probe and the fine-tune see the same noisy copies
            from steth_hub.train import with_noisy_copies

            train, noisy = with_noisy_copies(train, recipe["noisy_copies"], seed=int(recipe.get("seed", 42)))
        started = time.perf_counter()
        features = featurise_clipset(self, train)
        embeddings = self._embeddings(features)  # the pretrained encoder's: the statistics and the probe share them
        self._set_normalisation(embeddings)
        probe = self._fit_probe(embeddings, train.labels, seed=int(recipe.get("seed", 42)))
        probe["seconds"] = round(time.perf_counter() - started, 3)
        if self.mode == "frozen":
            from steth_hub.train import choose_threshold, training_facts

            history = {"probe": probe, "global_step": 0, "epochs": 0.0, "stopped_early": False,
                       "seed": int(recipe.get("seed", 42)), "device": "cpu", "train_seconds": probe["seconds"]}
            choose_threshold(self, train, valid, history)
            self.metadata.setdefault("training", {}).update(training_facts(train, history))
            if noisy is not None:
                history["noisy_copies"] = self.metadata["training"]["noisy_copies"] = noisy
            return history
        self._normalised_for = len(features)
        try:
            history = super().fit(train, valid, recipe, out_dir, **kwargs)
        finally:
            self._normalised_for = None
        history["probe"] = probe
        return history

    def _fit_probe(self, embeddings, labels, *, seed: int) -> dict:
        """Class-balanced L2 logistic regression on the standardised embeddings, copied into the head."""
        import torch
        from sklearn.linear_model import LogisticRegression

        net = self.net
        z = ((embeddings - net.embedding_mean) / net.embedding_std).numpy().astype(np.float64)
        probe = LogisticRegression(C=self.C, class_weight="balanced", max_iter=5000, random_state=seed)
        probe.fit(z, np.asarray(labels))
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.zero_()
            net.head.weight[1] = torch.as_tensor(probe.coef_[0], dtype=net.head.weight.dtype)
            net.head.bias[1] = float(probe.intercept_[0])
        return {"C": self.C, "n_clips": int(len(z)), "n_features": int(z.shape[1]),
                "train_accuracy": round(float(probe.score(z, np.asarray(labels))), 4)}

    # -- what the core asks a classifier (explainers, cards, warnings) ------------
    def input_grid(self, n_rows: int, n_cols: int):
        """Centre Hz of each mel band and centre s of each frame of the network input ``[1, 128, T]``."""
        from steth_builtin.efficientat_frontend import band_centres

        fe = self.front_end()
        if n_rows != fe.n_mels:
            raise ModelError(f"input has {n_rows} rows but the front end {fe.n_mels} mel bands",
                             fix="check the model's front_end settings")
        return band_centres(fe.n_mels, fe.f_min, fe.f_max), fe.frame_times(n_cols)

    def band_hz(self) -> tuple[float, float]:
        fe = self.front_end()
        return fe.f_min, fe.f_max

    def gradcam_layer(self, net):
        return net.encoder.features[-1]

    default_explainer = "gradcam"

    def card_facts(self) -> dict:
        """What the model card says the network is and where its pretrained part comes from."""
        width = self.net_config.get("width_mult", 0.4)
        n_params = int(sum(p.numel() for p in self.net.parameters())) if self.net is not None else None
        return {
            "architecture": f"EfficientAT MobileNetV3 (width_mult {width}) with a linear asthma head",
            "parameters": n_params,
            "front_end": self.input_description,
            "front_end_rate": self.front_end().sample_rate,
            "pretraining": "AudioSet (about 2 M ten-second YouTube clips, 527 sound classes), by knowledge "
                           "distillation from a PaSST transformer ensemble",
            "attribution": ATTRIBUTION,
            "mode": self.mode,
        }

    def onnx_frontend(self) -> dict:
        """The torch-free front end that reproduces ``featurise`` (for the light ONNX runtime)."""
        return {"name": "efficientat-mel", "config": self.front_end().config()}

    # -- saving -----------------------------------------------------------------
    def steth_metadata(self) -> dict:
        meta = super().steth_metadata()
        meta["mode"] = self.mode
        meta["card_facts"] = self.card_facts()
        return meta

    def _save_weights(self, directory: Path) -> None:
        from safetensors.torch import save_file

        from steth_hub.fileio import atomic_write_json

        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
        atomic_write_json(directory / CONFIG_FILE, {
            "plugin": self.plugin_name, "architecture": "EfficientATAsthma", "net": self.net_config,
            "front_end": self.front_end().config(), "mode": self.mode, "C": self.C,
        })

    @classmethod
    def _load_weights(cls, directory: Path, metadata: dict) -> "EfficientATClassifier":
        from steth_builtin.efficientat_net import load_state_strictly, read_safetensors

        path = directory / CONFIG_FILE
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            net_config = {"width_mult": float(config["net"]["width_mult"]),
                          "audioset_logits": bool(config["net"].get("audioset_logits", True)),
                          "dropout": float(config["net"].get("dropout", 0.0)),
                          "batch_norm": str(config["net"].get("batch_norm", "adapt"))}
            if net_config["batch_norm"] not in BATCH_NORM:
                raise ValueError(f"batch_norm {net_config['batch_norm']!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot read the efficientat {CONFIG_FILE} ({type(exc).__name__}: {exc})", path=path,
                             fix="save the model again with steth-hub") from exc
        net = _network_class()(**net_config)
        weights = directory / WEIGHTS_FILE
        load_state_strictly(net, read_safetensors(weights), weights)
        net.eval()
        return cls(net=net, net_config=net_config, front_end=config.get("front_end"),
                   mode=str(config.get("mode", "finetune")), C=float(config.get("C", 0.05)),
                   sample_rate=int(metadata.get("sample_rate", 16000)))
