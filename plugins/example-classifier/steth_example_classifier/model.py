"""A deliberately small classifier that shows the whole Classifier interface.

Features: the log energy of each clip in ``n_bands`` equal-width frequency bands, then a
logistic regression trained by gradient descent. It needs only numpy and safetensors, so
the template installs in seconds; a real plugin would put a torch model here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from steth_hub.classifier import Classifier


def band_energies(waveforms: np.ndarray, n_bands: int) -> np.ndarray:
    """Log mean power in ``n_bands`` equal slices of the spectrum, per clip: ``[N, n_bands]``."""
    spectrum = np.abs(np.fft.rfft(np.asarray(waveforms, dtype=np.float64), axis=1)) ** 2
    bands = np.array_split(spectrum, n_bands, axis=1)
    return np.log(np.stack([b.mean(axis=1) for b in bands], axis=1) + 1e-10)


class BandEnergyClassifier(Classifier):
    plugin_name = "example-band-energy"

    def __init__(self, n_bands: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.n_bands = int(n_bands)
        self.mean = np.zeros(self.n_bands)
        self.scale = np.ones(self.n_bands)
        self.weights = np.zeros(self.n_bands)
        self.bias = 0.0

    @classmethod
    def from_config(cls, config: dict) -> "BandEnergyClassifier":
        return cls(**config)

    def _standardised(self, waveforms: np.ndarray) -> np.ndarray:
        return (band_energies(waveforms, self.n_bands) - self.mean) / self.scale

    def fit(self, train, valid=None, recipe=None, out_dir=None) -> dict:
        recipe = dict(recipe or {})
        x = band_energies(train.waveforms, self.n_bands)
        self.mean, self.scale = x.mean(axis=0), x.std(axis=0) + 1e-8
        x = (x - self.mean) / self.scale
        y = train.labels.astype(np.float64)
        pos = max(y.mean(), 1e-6)
        sample_weight = np.where(y == 1, 0.5 / pos, 0.5 / max(1 - pos, 1e-6))  # balance the classes
        lr, steps = float(recipe.get("learning_rate", 0.5)), int(recipe.get("steps", 300))
        losses = []
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-(x @ self.weights + self.bias)))
            grad = sample_weight * (p - y) / len(y)
            self.weights -= lr * (x.T @ grad + 1e-3 * self.weights)
            self.bias -= lr * grad.sum()
            losses.append(float(-(sample_weight * (y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))).mean()))
        return {"loss": losses}

    def predict_proba(self, waveforms: np.ndarray) -> np.ndarray:
        z = self._standardised(waveforms) @ self.weights + self.bias
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def _save_weights(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"mean": self.mean, "scale": self.scale, "weights": self.weights,
                   "bias": np.array([self.bias])}, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps({"n_bands": self.n_bands}))

    @classmethod
    def _load_weights(cls, directory: Path, metadata: dict) -> "BandEnergyClassifier":
        from safetensors.numpy import load_file

        model = cls(**json.loads((directory / "config.json").read_text()))
        tensors = load_file(str(directory / "model.safetensors"))
        model.mean, model.scale, model.weights = tensors["mean"], tensors["scale"], tensors["weights"]
        model.bias = float(tensors["bias"][0])
        return model
