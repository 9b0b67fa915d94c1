"""steth-hub: machine learning on respiratory sounds, built first for asthma screening.

Importing this package is cheap: torch, transformers, diffusers, gradio and flwr load
only when a feature that needs them is used. The public API is reached lazily:

    >>> import steth_hub
    >>> result = steth_hub.screen("recording.wav")          # doctest: +SKIP
    >>> model = steth_hub.from_pretrained("steth/efficientat-asthma")  # doctest: +SKIP

steth-hub gives screening support, not a diagnosis.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from steth_hub.hookspecs import hookimpl
from steth_hub.specs import (
    ClassifierSpec,
    ExplainerSpec,
    FeatureExtractorSpec,
    GeneratorSpec,
    PluginSpec,
    PreprocessorSpec,
)

__version__ = "0.1.0"

# name -> "module:attribute"; imported on first access (PEP 562)
_LAZY = {
    "get_registry": "steth_hub.registry:get_registry",
    "decode": "steth_hub.audio:decode",
    "screen": "steth_hub.screening:screen",
    "from_pretrained": "steth_hub.hub:from_pretrained",
    "explain": "steth_hub.explanation:explain",
}

__all__ = [
    "__version__", "hookimpl", "PluginSpec", "PreprocessorSpec", "FeatureExtractorSpec",
    "ClassifierSpec", "GeneratorSpec", "ExplainerSpec", *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from steth_hub.audio import decode
    from steth_hub.registry import get_registry


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'steth_hub' has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    value = getattr(import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
