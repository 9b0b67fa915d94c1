"""Where a clip is classified: the interface every classifier plugin implements.

A classifier takes clips (float32 waveforms at its ``sample_rate``, already preprocessed
with its ``preset``) and returns P(asthma) per clip. It can be built from a config,
trained, saved to a folder and loaded back. Every saved folder holds ``steth.json``
naming the plugin that reads it, so :func:`load_classifier` looks the plugin up in the
registry — never an import path taken from a file.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from steth_hub.errors import ModelError
# steth.json and the weight checks live in model_folder; kept importable from here
from steth_hub.model_folder import (  # noqa: F401
    LABELS, STETH_METADATA, check_loading_info, check_safetensors_only, load_classifier, plugin_distribution,
    read_metadata, write_metadata,
)


class Classifier(abc.ABC):
    """Base class of classifier plugins.

    Attributes:
        plugin_name: the name the plugin registers (written to ``steth.json``).
        sample_rate: the rate clips must have.
        threshold: decision threshold on P(asthma), chosen on training/validation data.
        preset: the preprocessing preset (a dict) the model was trained with.
        metadata: everything else saved in ``steth.json`` (training data, evaluation...).
    """

    plugin_name: ClassVar[str] = ""

    def __init__(self, *, sample_rate: int = 16000, threshold: float = 0.5, preset: dict | None = None,
                 metadata: dict | None = None):
        self.sample_rate = int(sample_rate)
        self.threshold = float(threshold)
        self.preset = dict(preset or {})
        self.metadata = dict(metadata or {})

    # -- building and training ------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: dict) -> "Classifier":
        """A fresh (untrained, or pretrained-initialised) model from a config dict."""

    @abc.abstractmethod
    def fit(self, train, valid=None, recipe: dict | None = None, out_dir: str | os.PathLike | None = None) -> dict:
        """Train on a ClipSet (``valid`` for early stopping); returns a history dict."""

    @abc.abstractmethod
    def predict_proba(self, waveforms: np.ndarray) -> np.ndarray:
        """P(asthma) per clip for float32 ``[N, S]`` waveforms at ``sample_rate``."""

    # -- saving and loading ---------------------------------------------------
    @abc.abstractmethod
    def _save_weights(self, directory: Path) -> None:
        """Write the weights (safetensors) and the model's own config into ``directory``."""

    @classmethod
    @abc.abstractmethod
    def _load_weights(cls, directory: Path, metadata: dict) -> "Classifier":
        """Build the model from ``directory`` (written by ``_save_weights``)."""

    def steth_metadata(self) -> dict:
        from steth_hub import __version__

        meta = dict(self.metadata)
        meta.update({
            "plugin": self.plugin_name,
            "threshold": self.threshold,
            "sample_rate": self.sample_rate,
            "preset": self.preset,
            "labels": list(LABELS),
            "steth_hub_version": __version__,
        })
        facts = self.card_facts()
        if facts:  # the card is rendered from steth.json alone, so the classifier's own facts go there
            meta["card_facts"] = facts
        if not meta.get("distribution"):  # lets a loader without the plugin say what to install
            dist = plugin_distribution(self.plugin_name)
            if dist:
                meta["distribution"] = dist
        return meta

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Save weights, configs and ``steth.json`` into ``directory`` (atomically)."""
        from steth_hub.fileio import atomic_directory

        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            self._save_weights(tmp)
            write_metadata(tmp, self.steth_metadata())
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None, **kwargs: Any
                        ) -> "Classifier":
        """Load a model by name or folder: :func:`steth_hub.hub.from_pretrained` (the one resolver: a
        folder, an embedded model, a cached Hub repo), checked to be this class when called on a plugin's class."""
        from steth_hub.hub import from_pretrained

        model = from_pretrained(name_or_path, revision, **kwargs)
        if cls is not Classifier and not isinstance(model, cls):
            raise ModelError(f"{os.fspath(name_or_path)} holds a {model.plugin_name!r} model, not {cls.plugin_name!r}",
                             fix=f"load it with steth_hub.from_pretrained (any plugin), or pick a {cls.plugin_name} model")
        return model

    @classmethod
    def from_folder(cls, directory: str | os.PathLike) -> "Classifier":
        """This class's part of loading a folder written by ``save_pretrained`` (safetensors only);
        :func:`steth_hub.model_folder.load_classifier` calls it on the class ``steth.json`` names."""
        directory = Path(directory)
        meta = read_metadata(directory)
        check_safetensors_only(directory)
        model = cls._load_weights(directory, meta)
        model.threshold = float(meta.get("threshold", model.threshold))
        model.preset = dict(meta.get("preset") or model.preset)
        model.sample_rate = int(meta.get("sample_rate", model.sample_rate))
        model.metadata = {k: v for k, v in meta.items()
                          if k not in {"plugin", "threshold", "preset", "sample_rate", "labels"}}
        return model

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Publish this model (weights, configs, generated card) in one commit; see steth_hub.publish.push_to_hub."""
        from steth_hub.publish import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    # -- what the core asks every classifier (optional; see CONTRIBUTING.md) ------
    #: the explainer used when none is named (``None``: the first compatible one)
    default_explainer: ClassVar[str | None] = None
    #: axes of a batch of network inputs that are time and frequency (torch classifiers set this)
    feature_axes: ClassVar[dict | None] = None

    def input_grid(self, n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
        """``(centre Hz of each frequency row, centre s of each time column)`` of the network input.

        Explainers return maps on this grid; :mod:`steth_hub.explanation` places them on the
        spectrogram. A classifier without a time x frequency input leaves it unimplemented, and
        input-attribution explainers then say they cannot explain it.
        """
        raise NotImplementedError

    def band_hz(self) -> tuple[float, float] | None:
        """The band of the clips the model reads, in Hz (``None``: up to half the clips' rate).

        A recording whose sample rate leaves part of this band empty gets a warning when screened.
        """
        return None

    def card_facts(self) -> dict:
        """What a model card says the model is: ``architecture``, ``parameters``, ``front_end``,
        ``front_end_rate``, ``pretraining``, ``attribution`` (any subset; unknown keys are shown as they are)."""
        return {}

    # -- decisions --------------------------------------------------------------
    def decide(self, probabilities) -> np.ndarray:
        """True where P(asthma) is at or above the model's threshold."""
        return np.asarray(probabilities) >= self.threshold

    def __repr__(self) -> str:
        return f"{type(self).__name__}(plugin={self.plugin_name!r}, threshold={self.threshold:.3f})"


