"""The inference side of a torch classifier: what a plugin implements, and batched prediction.

Screening, explanation, the ONNX export and federated clients import this module; none of them
imports the training code (:mod:`steth_hub.train`, which ``TorchClassifier.fit`` imports when a
model is trained).

The classifier protocol (implemented by ``steth_builtin.ast_model`` and ``steth_builtin.densenet_model``):

``featurise(waveforms, sample_rate) -> torch.Tensor``
    raw (unnormalised) features of a batch of clips;
``feature_signature(sample_rate, n_samples)``
    what the features depend on besides the samples (the cache key);
``fit_normalisation(features)``
    learn the normalisation from training features (stored in the saved model);
``normalise(features) -> torch.Tensor``
    apply it;
``torch_module() -> torch.nn.Module``
    the network, called as ``module(features) -> logits [N, 2]`` through ``logits(module, x)``;
``logits(module, features) -> torch.Tensor``
    one forward pass (lets AST unwrap its ``ModelOutput``);
``feature_axes -> {"time": int, "freq": int}``
    which axes of a feature batch are time and frequency (for the masks);
``set_trained_module(module)``
    take the trained (best) weights back (and finish whatever training-only state it keeps);
``predict_features(features) -> np.ndarray``
    P(asthma) per clip for normalised features (used for the threshold).

:class:`TorchClassifier` implements the parts that are the same for every torch model: batched
``predict_proba`` with a per-clip feature cache (:mod:`steth_hub.feature_cache`), ``predict_features``,
and ``fit`` through the shared Trainer loop. What a classifier may declare besides (input grid,
band, card facts, default explainer, ONNX front end) is listed in CONTRIBUTING.md.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from steth_hub.classifier import Classifier
from steth_hub.feature_cache import cached_features


class TorchClassifier(Classifier):
    """What AST and DenseNet share: training through :func:`fit_torch`, batched prediction.

    A subclass sets ``self.net`` (a ``torch.nn.Module``) and implements ``featurise``,
    ``fit_normalisation``, ``normalise``, ``logits``, ``feature_axes``, ``_save_weights`` and
    ``_load_weights``.
    """

    #: axes of a feature batch, for the augmentation masks
    feature_axes: dict = {"time": -1, "freq": -2}
    #: clips per forward pass in predict_proba
    predict_batch_size: int = 32

    net: Any = None

    def torch_module(self):
        return self.net

    def set_trained_module(self, module) -> None:
        self.net = module
        self.net.eval()

    def _device(self):
        import torch

        return next(self.net.parameters()).device if any(True for _ in self.net.parameters()) else torch.device("cpu")

    def fit(self, train, valid=None, recipe: dict | None = None, out_dir: str | os.PathLike | None = None,
            **kwargs) -> dict:
        """Train with the shared Trainer loop (see :func:`fit_torch`); records what it was trained on."""
        from steth_hub.recipe import check_recipe
        from steth_hub.train import distillation_set, fit_torch, training_facts, with_noisy_copies

        if int(train.sample_rate) != self.sample_rate:
            self.sample_rate = int(train.sample_rate)
        checked = check_recipe(recipe or {})  # before any work: a bad recipe costs nothing
        distilled = noisy = None
        if checked.get("noisy_copies"):  # noisy copies of the training clips (see with_noisy_copies)
            train, noisy = with_noisy_copies(train, checked["noisy_copies"], seed=int(checked["seed"]))
        if checked.get("distill"):  # a teacher trained on these clips only (see distillation_set)
            train, soft, distilled = distillation_set(checked["distill"], train, valid, seed=int(checked["seed"]),
                                                      out_dir=out_dir)
            kwargs["soft_targets"] = soft
        history = fit_torch(self, train, valid, recipe, out_dir, **kwargs)
        if distilled is not None:
            history["distillation"] = distilled
            self.metadata.setdefault("training", {})["distillation"] = distilled
        if noisy is not None:
            history["noisy_copies"] = noisy
            self.metadata.setdefault("training", {})["noisy_copies"] = noisy
        self.metadata.setdefault("training", {}).update(training_facts(train, history))
        return history

    def predict_features(self, features) -> np.ndarray:
        """P(asthma) per clip for already normalised features (batched, no gradients)."""
        import torch

        net = self.net
        was_training = net.training
        net.eval()
        device = self._device()
        out = []
        with torch.no_grad():
            for start in range(0, len(features), self.predict_batch_size):
                x = features[start:start + self.predict_batch_size].to(device)
                out.append(torch.softmax(self.logits(net, x).float(), dim=-1)[:, 1].cpu())
        if was_training:
            net.train()
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, dtype=np.float32)

    def predict_proba(self, waveforms: np.ndarray) -> np.ndarray:
        """P(asthma) per clip for float32 ``[N, S]`` waveforms at ``sample_rate``."""
        from steth_hub.clips import clip_batch

        waveforms = clip_batch(waveforms)
        if len(waveforms) == 0:
            return np.zeros(0, dtype=np.float32)
        out = []
        for start in range(0, len(waveforms), self.predict_batch_size):
            x = self.normalise(cached_features(self, waveforms[start:start + self.predict_batch_size], self.sample_rate))
            out.append(self.predict_features(x))
        return np.concatenate(out)

    # -- the light runtime (steth_hub/onnx_export.py, steth_hub/runtime.py) -----
    def onnx_frontend(self) -> dict | None:
        """``{"name": <feature-extractor plugin>, "config": {...}}``: a torch-free front end that returns
        exactly ``featurise()`` as numpy float32. None (the default): no ONNX export, screening uses torch."""
        return None

    def export_onnx(self, directory: str | os.PathLike, **kwargs) -> dict:
        """Write ``directory/model.onnx`` (raw features -> logits) and return its ``steth.json`` block."""
        from steth_hub.onnx_export import export_onnx

        return export_onnx(self, directory, **kwargs)
