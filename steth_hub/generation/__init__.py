"""Synthetic breath sounds: generators, their outputs, and the checks that say whether to trust them.

* :mod:`~steth_hub.generation.prompts` - prompt sentences <-> patient facts (diagnosis, sex, age);
* :mod:`~steth_hub.generation.spectral` - the log-mel image the shipped model draws, and Griffin-Lim back;
* :mod:`~steth_hub.generation.writer` - WAV files plus a JSON sidecar, written as one folder;
* :mod:`~steth_hub.generation.check` - "AI checks AI": a classifier scores every synthetic clip;
* :mod:`~steth_hub.generation.fad` - Frechet Audio Distance in the EfficientAT mn04 embedding;
* :mod:`~steth_hub.generation.data` - a corpus's clips with the facts a generator is conditioned on.

Generators are plugins (``register_generators``); the built-in ones live in
``plugins/steth_builtin/generators*.py``: ``breath-diffusion`` (shipped, trained here on CPU) and
``stable-audio`` (diffusers ``StableAudioPipeline``, for users who have Stable Audio Open or a
fine-tuned copy). :func:`load_generator` turns a ``--model`` value into one of them.
Importing this package imports nothing heavy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from steth_hub.errors import ConfigError

_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
#: the generator `steth generate` uses when no --model is given
DEFAULT_GENERATOR = "steth/breath-diffusion"
#: generator models that ship inside the package: name -> (plugin, folder)
EMBEDDED_GENERATORS: dict[str, tuple[str, Path]] = {
    DEFAULT_GENERATOR: ("breath-diffusion", _MODELS_DIR / "breath-diffusion"),
}
STABLE_AUDIO_REPO = "stabilityai/stable-audio-open-1.0"


def resolve_generator_folder(model, plugin: str) -> Path:
    """The folder of a ``plugin`` model: ``None`` or an embedded name -> the shipped folder; else a folder path."""
    if model is None:
        for name, (p, folder) in EMBEDDED_GENERATORS.items():
            if p == plugin:
                return folder
        raise ConfigError(f"generator {plugin!r} has no shipped model", fix="pass --model FOLDER")
    if str(model) in EMBEDDED_GENERATORS:
        return EMBEDDED_GENERATORS[str(model)][1]
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(f"no {plugin} model folder at {model}", path=model,
                          fix=f"pass --model with a folder written by {plugin} training, or leave --model out")
    return path


def generator_plugin_of(folder: str | os.PathLike) -> str | None:
    """Which generator plugin a model folder belongs to, from its files (None when none does)."""
    folder = Path(folder)
    index = folder / "model_index.json"
    if index.is_file():
        try:
            if "StableAudio" in str(json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")):
                return "stable-audio"
        except ValueError:
            return None
    config = folder / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except ValueError:
            return None
        if isinstance(data, dict) and str(data.get("format", "")).startswith("steth-generator/"):
            return data.get("plugin")
    return None


def load_generator(model: str | os.PathLike | None = None, **options):
    """A generator object for a ``--model`` value.

    * ``None`` or ``steth/breath-diffusion``: the shipped ``breath-diffusion`` model;
    * a registered generator name (``breath-diffusion``, ``stable-audio``): that plugin's default model
      (``stable-audio``: ``stabilityai/stable-audio-open-1.0`` from the local Hugging Face cache);
    * a folder: the plugin its files belong to (``model_index.json`` of a StableAudioPipeline, or a
      steth-hub generator ``config.json``);
    * ``stabilityai/stable-audio-open-1.0`` or another ``ORG/NAME``: ``stable-audio`` from the local cache.

    Nothing is downloaded. An unknown value is a one-line error naming it and the choices.
    """
    from steth_hub.registry import get_registry

    registry = get_registry()
    names = registry.names("generator")
    value = DEFAULT_GENERATOR if model is None else os.fspath(model)
    if value in EMBEDDED_GENERATORS:
        plugin, folder = EMBEDDED_GENERATORS[value]
        return registry.create("generator", plugin, folder, **options)
    if value in names:
        return registry.create("generator", value, None, **options)
    path = Path(value).expanduser()
    if path.is_dir():
        plugin = generator_plugin_of(path)
        if plugin is None:
            raise ConfigError(f"{value} is a folder but not a generator model (no StableAudioPipeline "
                              "model_index.json, no steth-hub generator config.json)", path=value,
                              fix="point --model at a generator folder, or at a name from `steth plugins --kind generator`")
        return registry.create("generator", plugin, path, **options)
    if value.count("/") == 1 and not value.startswith((".", "/", "~")) and not path.exists():
        return registry.create("generator", "stable-audio", value, **options)
    known = ", ".join([DEFAULT_GENERATOR, *names])
    raise ConfigError(f"unknown generator model {value!r}", path=None,
                      fix=f"use one of: {known}, a model folder, or ORG/NAME of a Stable Audio model in the "
                          "local Hugging Face cache")
