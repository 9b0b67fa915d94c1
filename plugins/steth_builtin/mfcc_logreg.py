"""The classic baseline: MFCC statistics per clip + standardisation + logistic regression.

Every evaluation report scores this baseline on the same folds and clips as the model
under test, so the gap a deep model buys is always visible. Per clip it computes MFCCs
(librosa, at the clip's own sample rate) with their first and second differences, and
takes the mean and standard deviation of each over time: ``6 * n_mfcc`` numbers. A
``StandardScaler`` and a class-balanced ``LogisticRegression`` (scikit-learn) are fitted
on them.

Saved as safetensors (the scaler's mean and scale, the coefficients and the intercept)
plus ``mfcc_logreg.json`` with the feature settings: no pickle, no joblib. Prediction
after loading uses the same arrays as prediction after fitting, so a saved model gives
identical probabilities.

The band defaults to 0-2 kHz (``fmax``): the 4 kHz KAUH recordings hold nothing above
2 kHz while 44.1 kHz recordings do, so a wider band would let the baseline recognise the
recording device rather than the diagnosis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from steth_hub.classifier import Classifier
from steth_hub.errors import ConfigError, ModelError

CONFIG_FILE = "mfcc_logreg.json"
WEIGHTS_FILE = "model.safetensors"

DEFAULTS: dict[str, Any] = {
    "n_mfcc": 20,          # cepstral coefficients (c0 included)
    "n_mels": 40,          # mel bands the cepstrum is taken from
    "fmin": 50.0,          # Hz
    "fmax": 2000.0,        # Hz; None = Nyquist
    "win_ms": 25.0,        # analysis window
    "hop_ms": 10.0,        # hop between frames
    "deltas": True,        # add first and second differences
    "C": 1.0,              # inverse L2 regularisation strength
    "max_iter": 2000,
}


class MFCCLogReg(Classifier):
    """MFCC mean/std statistics + StandardScaler + LogisticRegression(class_weight="balanced")."""

    plugin_name: ClassVar[str] = "mfcc-logreg"

    def __init__(self, config: dict | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.config = _check_config(config or {})
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None
        self.intercept_: float | None = None

    # -- building -----------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict) -> "MFCCLogReg":
        """A fresh model; ``config`` may set any key of :data:`DEFAULTS` and ``sample_rate``."""
        config = dict(config or {})
        sample_rate = config.pop("sample_rate", 16000)
        threshold = config.pop("threshold", 0.5)
        return cls(config, sample_rate=sample_rate, threshold=threshold)

    # -- features -------------------------------------------------------------------
    def features(self, waveforms: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """``[N, 6 * n_mfcc]`` (``2 * n_mfcc`` without deltas): mean and std over time per coefficient."""
        import librosa

        x = np.asarray(waveforms, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"expected float32 waveforms [N, S], got shape {x.shape}")
        sr = int(sample_rate or self.sample_rate)
        c = self.config
        n_fft = max(16, int(round(c["win_ms"] * sr / 1000)))
        hop = max(1, int(round(c["hop_ms"] * sr / 1000)))
        fmax = min(float(c["fmax"]), sr / 2) if c["fmax"] else sr / 2
        mfcc = librosa.feature.mfcc(y=x, sr=sr, n_mfcc=c["n_mfcc"], n_fft=n_fft, hop_length=hop,
                                    n_mels=c["n_mels"], fmin=c["fmin"], fmax=fmax)  # [N, n_mfcc, T]
        parts = [mfcc]
        if c["deltas"]:
            width = min(9, mfcc.shape[-1] if mfcc.shape[-1] % 2 else mfcc.shape[-1] - 1)
            if width < 3:
                raise ValueError(f"clips of {x.shape[1]} samples are too short for MFCC deltas")
            parts += [librosa.feature.delta(mfcc, width=width, order=1, axis=-1),
                      librosa.feature.delta(mfcc, width=width, order=2, axis=-1)]
        stacked = np.concatenate(parts, axis=1)
        return np.concatenate([stacked.mean(axis=-1), stacked.std(axis=-1)], axis=1).astype(np.float64)

    # -- training -------------------------------------------------------------------
    def fit(self, train, valid=None, recipe: dict | None = None, out_dir=None) -> dict:
        """Fit scaler and logistic regression on ``train`` clips; the threshold comes from ``valid``.

        The threshold is Youden's J on recording-level probabilities of ``valid`` (or of
        ``train`` when no validation set is given). ``recipe`` and ``out_dir`` are not
        needed (no epochs, nothing to checkpoint); they are accepted for the interface.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        from steth_hub.metrics import binary_metrics, recording_threshold

        labels = np.asarray(train.labels)
        if set(np.unique(labels)) != {0, 1}:
            raise ConfigError("the training clips need both asthma and not-asthma examples",
                              fix="train on a corpus (or fold) with patients of both labels")
        self.sample_rate = int(train.sample_rate)
        feats = self.features(train.waveforms, train.sample_rate)
        scaler = StandardScaler().fit(feats)
        model = LogisticRegression(C=float(self.config["C"]), class_weight="balanced",
                                   max_iter=int(self.config["max_iter"]))
        model.fit(scaler.transform(feats), labels)
        self.mean_ = scaler.mean_.astype(np.float64)
        self.scale_ = scaler.scale_.astype(np.float64)
        self.coef_ = model.coef_[0].astype(np.float64)
        self.intercept_ = float(model.intercept_[0])
        train_prob = self._proba(feats)
        has_valid = valid is not None and len(valid) > 0
        chosen_on, prob = (valid, self.predict_proba(valid.waveforms)) if has_valid else (train, train_prob)
        self.threshold = recording_threshold(chosen_on.labels, prob, chosen_on.recording_ids)
        history = {
            "n_train_clips": int(len(train)),
            "n_features": int(feats.shape[1]),
            "n_iter": int(np.max(model.n_iter_)),
            "threshold": self.threshold,
            "threshold_from": "validation recordings" if has_valid else "training recordings",
            "train": binary_metrics(labels, train_prob, self.threshold),
        }
        if has_valid:
            history["valid"] = binary_metrics(valid.labels, prob, self.threshold)
        return history

    def _proba(self, feats: np.ndarray) -> np.ndarray:
        """The fitted scaler and logistic regression applied to feature rows (the same arrays after loading)."""
        from scipy.special import expit

        return expit(((feats - self.mean_) / self.scale_) @ self.coef_ + self.intercept_).astype(np.float32)

    def predict_proba(self, waveforms: np.ndarray) -> np.ndarray:
        """P(asthma) per clip (float32 ``[N]``) for clips at ``sample_rate``."""
        if self.coef_ is None:
            raise ModelError("the MFCC baseline is not fitted", fix="call fit(...) or load a saved model")
        return self._proba(self.features(waveforms))

    # -- saving and loading -----------------------------------------------------------
    def _save_weights(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        from steth_hub.fileio import atomic_write_json

        if self.coef_ is None:
            raise ModelError("cannot save an unfitted MFCC baseline", path=directory, fix="fit it first")
        save_file({"scaler_mean": self.mean_, "scaler_scale": self.scale_, "coef": self.coef_,
                   "intercept": np.array([self.intercept_], dtype=np.float64)}, str(directory / WEIGHTS_FILE))
        atomic_write_json(directory / CONFIG_FILE, dict(self.config))

    @classmethod
    def _load_weights(cls, directory: Path, metadata: dict) -> "MFCCLogReg":
        from safetensors.numpy import load_file

        try:
            config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
            tensors = load_file(str(directory / WEIGHTS_FILE))
        except Exception as exc:  # OSError, JSON errors, safetensors' own SafetensorError
            raise ModelError(f"cannot read the MFCC baseline ({type(exc).__name__}: {exc})", path=directory,
                             fix="re-save the model with save_pretrained") from exc
        model = cls(config, sample_rate=metadata.get("sample_rate", 16000))
        # strict: every array present, none unexpected, each of the length the config's features have
        n = model.config["n_mfcc"] * (3 if model.config["deltas"] else 1) * 2
        expected = {"scaler_mean": (n,), "scaler_scale": (n,), "coef": (n,), "intercept": (1,)}
        problems = [f"missing {k}" for k in sorted(set(expected) - set(tensors))]
        problems += [f"unexpected {k}" for k in sorted(set(tensors) - set(expected))]
        problems += [f"{k} has shape {tuple(tensors[k].shape)}, the config needs {shape}"
                     for k, shape in expected.items() if k in tensors and tuple(tensors[k].shape) != shape]
        problems += [f"{k} holds NaN or infinite values" for k in sorted(set(expected) & set(tensors))
                     if not np.isfinite(tensors[k]).all()]
        if problems:
            raise ModelError(f"{WEIGHTS_FILE} does not match {CONFIG_FILE}: " + "; ".join(problems), path=directory,
                             fix="the folder is damaged or mixes two models: re-save the model with save_pretrained")
        if np.any(tensors["scaler_scale"] <= 0):
            raise ModelError(f"{WEIGHTS_FILE}: scaler_scale has values at or below 0", path=directory,
                             fix="re-save the model with save_pretrained")
        model.mean_ = tensors["scaler_mean"]
        model.scale_ = tensors["scaler_scale"]
        model.coef_ = tensors["coef"]
        model.intercept_ = float(tensors["intercept"][0])
        return model


def _check_config(config: dict) -> dict:
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown mfcc-logreg setting(s): {', '.join(unknown)}",
                          fix=f"use only: {', '.join(sorted(DEFAULTS))}")
    merged = {**DEFAULTS, **config}
    for key in ("n_mfcc", "n_mels", "max_iter"):
        if not isinstance(merged[key], int) or merged[key] < 1:
            raise ConfigError(f"mfcc-logreg: {key} must be a positive integer, got {merged[key]!r}",
                              fix=f"set e.g. {key}: {DEFAULTS[key]}")
    for key in ("win_ms", "hop_ms", "C"):
        if not isinstance(merged[key], (int, float)) or merged[key] <= 0:
            raise ConfigError(f"mfcc-logreg: {key} must be a positive number, got {merged[key]!r}",
                              fix=f"set e.g. {key}: {DEFAULTS[key]}")
    if merged["n_mfcc"] > merged["n_mels"]:
        raise ConfigError("mfcc-logreg: n_mfcc cannot exceed n_mels", fix="lower n_mfcc or raise n_mels")
    return merged
