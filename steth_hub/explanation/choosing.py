"""Choosing an explainer for a classifier, running it, and what it returns (:class:`ClipMaps`).

An explainer plugin (``steth plugins --kind explainer``) supports the classifiers it names
(``options["classifiers"]``) or any classifier with the methods it needs (``options["needs"]``,
e.g. ``input_grid``); a classifier names its ``default_explainer``. The helpers at the end
(:func:`network_input`, :func:`evaluating`, :func:`logits_module`) are for explainer plugins.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from steth_hub.errors import ConfigError, PluginError

#: what a map can explain
TARGETS = ("decision", "asthma", "not_asthma")


@dataclass
class ClipMaps:
    """Explanation maps of a batch of clips, on the classifier's own input grid.

    Attributes:
        maps: float32 ``[N, F, T]``, non-negative; larger means the model relied on it more.
        frequencies: ``[F]`` centre frequency in Hz of each row, increasing.
        times: ``[T]`` time in seconds of each column, from the clip's start, increasing.
            Columns past the clip's end (padding added by a front end) are ignored when placed.
        target: the class the maps explain (``"asthma"`` or ``"not_asthma"``).
        method: a short name of the method (``"attention relevance"``, ``"grad-cam"``...).
    """

    maps: np.ndarray
    frequencies: np.ndarray
    times: np.ndarray
    target: str = "asthma"
    method: str = ""

    def __post_init__(self) -> None:
        self.maps = np.nan_to_num(np.asarray(self.maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        self.frequencies = np.asarray(self.frequencies, dtype=np.float64).reshape(-1)
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        if self.maps.ndim != 3:
            raise PluginError(f"explainer maps must be [clips, frequencies, times], got shape {self.maps.shape}",
                              fix="return one 2-D map per clip")
        if self.maps.shape[1:] != (len(self.frequencies), len(self.times)):
            raise PluginError(f"explainer maps {self.maps.shape} do not match {len(self.frequencies)} frequencies "
                              f"and {len(self.times)} times", fix="give one frequency per row and one time per column")
        for name, axis in (("frequencies", self.frequencies), ("times", self.times)):
            if len(axis) == 0 or not np.isfinite(axis).all() or (len(axis) > 1 and np.any(np.diff(axis) <= 0)):
                raise PluginError(f"explainer {name} must be finite and strictly increasing",
                                  fix=f"list the {name} of the map's rows/columns in increasing order")
        self.maps = np.maximum(self.maps, 0.0)

    def __len__(self) -> int:
        return len(self.maps)


def _classifier_class(classifier):
    """The classifier's class: of an object, or looked up by plugin name in the registry (None if unknown)."""
    if not isinstance(classifier, str):
        return type(classifier)
    from steth_hub.registry import get_registry

    try:
        return get_registry().get("classifier", classifier).load()
    except Exception:  # an uninstalled plugin supports no capability-based explainer
        return None


def _implements(cls, method: str) -> bool:
    """True when the classifier class provides ``method`` (an ``input_grid`` of its own, not the base's)."""
    from steth_hub.classifier import Classifier

    found = getattr(cls, method, None) if cls is not None else None
    return callable(found) and found is not getattr(Classifier, method, None)


def supports(spec, classifier) -> bool:
    """Whether explainer ``spec`` can explain ``classifier`` (an object or a plugin name).

    An explainer lists the classifiers it is made for by name (``options["classifiers"]``), or the
    methods it needs a classifier to have (``options["needs"]``, e.g. ``["input_grid",
    "gradcam_layer"]``): then any classifier that declares them is supported, with no core edit.
    """
    options = spec.options or {}
    plugin = classifier if isinstance(classifier, str) else getattr(classifier, "plugin_name", None)
    names = list(options.get("classifiers") or [])
    if names and plugin not in names:
        return False
    needs = list(options.get("needs") or [])
    if needs:
        cls = _classifier_class(classifier)
        return all(_implements(cls, method) for method in needs)
    return True


def explainers_for(classifier) -> list[str]:
    """Installed explainers that can explain ``classifier`` (a loaded classifier or a plugin name)."""
    from steth_hub.registry import get_registry

    return sorted({reg.spec.name for reg in get_registry().registrations("explainer") if supports(reg.spec, classifier)})


def load_explainer(classifier, name: str | None = None) -> tuple[str, Any]:
    """``(name, explainer object)`` for ``classifier``: the named one, or the classifier's ``default_explainer``."""
    from steth_hub.registry import get_registry

    plugin = getattr(classifier, "plugin_name", None) or type(classifier).__name__
    compatible = explainers_for(classifier)
    if name is None:
        default = getattr(classifier, "default_explainer", None)
        if default in compatible:
            name = default
        elif compatible:
            name = compatible[0]
        else:
            raise PluginError(f"no installed explainer supports the {plugin!r} classifier",
                              fix="implement input_grid() on the classifier (CONTRIBUTING.md), or install an "
                                  "explainer plugin that supports it (steth plugins --kind explainer)")
    spec = get_registry().get("explainer", name)
    if not supports(spec, classifier):
        options = spec.options or {}
        wants = (", ".join(options.get("classifiers") or []) or
                 "classifiers with " + " and ".join(f"{m}()" for m in options.get("needs") or []))
        raise PluginError(f"explainer {name!r} supports {wants}, not the {plugin!r} classifier",
                          fix=f"use one of: {', '.join(compatible) or 'none installed'}")
    return name, spec.create()


def _target_class(target: str, decision: bool) -> int:
    if target not in TARGETS:
        raise ConfigError(f"unknown explanation target {target!r}", fix=f"use one of: {', '.join(TARGETS)}")
    if target == "decision":
        return 1 if decision else 0
    return 1 if target == "asthma" else 0


def _run_explainer(engine, classifier, waveforms: np.ndarray, target: int, name: str) -> ClipMaps:
    """Call ``engine.explain``; passes ``target`` to explainers that accept it."""
    explain_fn = getattr(engine, "explain", None)
    if not callable(explain_fn):
        raise PluginError(f"explainer {name!r} has no explain(classifier, waveforms) method",
                          fix="its factory must return an object with explain()")
    try:
        accepts_target = "target" in inspect.signature(explain_fn).parameters
    except (TypeError, ValueError):
        accepts_target = False
    maps = explain_fn(classifier, waveforms, target=target) if accepts_target else explain_fn(classifier, waveforms)
    if not isinstance(maps, ClipMaps):
        raise PluginError(f"explainer {name!r} returned {type(maps).__name__}, not ClipMaps",
                          fix="return steth_hub.explanation.ClipMaps(maps, frequencies, times)")
    if len(maps) != len(waveforms):
        raise PluginError(f"explainer {name!r} returned {len(maps)} maps for {len(waveforms)} clips",
                          fix="return one map per clip")
    return maps


def network_input(classifier, waveforms: np.ndarray):
    """The classifier's network input for clips ``[N, S]``: its own featuriser and normalisation
    (``classifier.normalise(classifier.featurise(...))``, the protocol of steth_hub.train)."""
    for needed in ("featurise", "normalise", "logits"):
        if not callable(getattr(classifier, needed, None)):
            raise PluginError(f"classifier {getattr(classifier, 'plugin_name', '?')!r} has no {needed}() method, "
                              "so its input cannot be explained", fix="explain a torch classifier (steth_hub.train.TorchClassifier)")
    waveforms = np.asarray(waveforms, dtype=np.float32)
    if waveforms.ndim == 1:
        waveforms = waveforms[None, :]
    return classifier.normalise(classifier.featurise(waveforms, classifier.sample_rate)).float()


@contextmanager
def evaluating(net) -> Iterator[None]:
    """Eval mode (no dropout, fixed batch-norm statistics) while explaining; the previous mode after."""
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def logits_module(classifier, net):
    """A ``torch.nn.Module`` computing ``classifier.logits(net, x)``: one forward, whatever the model's API."""
    import torch

    class ClassifierLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return classifier.logits(self.net, x)

    return ClassifierLogits()
