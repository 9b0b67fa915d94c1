"""Experiment configs: which classifier, its settings, the preprocessing preset and the training recipe.

An experiment config is a YAML (or JSON) file in ``configs/``::

    name: ast-asthma
    classifier: ast            # a classifier plugin name (steth plugins)
    model: {...}               # passed to the plugin's Classifier.from_config
    preset: excerpt-10s        # a preset name, a YAML path, or an inline preset
    recipe:                    # training recipe; HF TrainingArguments names where they exist
      num_train_epochs: 25
      per_device_train_batch_size: 16
      learning_rate: 8.0e-5
      ...

``steth train`` and ``steth evaluate`` both read it, so a model and its evaluation are
made from one file.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steth_hub.errors import ConfigError
from steth_hub.fileio import read_yaml_or_json

KNOWN_KEYS = {"name", "classifier", "model", "preset", "recipe", "description", "evaluation"}


@dataclass
class Experiment:
    """A parsed experiment config. ``source`` is the file it came from (for error messages)."""

    name: str
    classifier: str
    model: dict = field(default_factory=dict)
    preset: Any = "excerpt-10s"
    recipe: dict = field(default_factory=dict)
    description: str = ""
    evaluation: dict = field(default_factory=dict)
    source: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "classifier": self.classifier, "model": copy.deepcopy(self.model),
                "preset": copy.deepcopy(self.preset), "recipe": copy.deepcopy(self.recipe),
                "description": self.description, "evaluation": copy.deepcopy(self.evaluation)}

    def with_recipe(self, **overrides: Any) -> "Experiment":
        """A copy with some recipe values replaced (e.g. fewer epochs for a smoke run)."""
        new = copy.deepcopy(self)
        new.recipe.update(overrides)
        return new


def load_experiment(config: str | os.PathLike | dict) -> Experiment:
    """Read an experiment config from a YAML/JSON file or a dict; errors name the file and the key."""
    source = None
    if isinstance(config, dict):
        data = copy.deepcopy(config)
    else:
        path = Path(config)
        source = str(path)
        if not path.is_file():
            raise ConfigError("config file not found", path=path,
                              fix="pass a YAML file such as configs/ast-asthma.yaml")
        data = read_yaml_or_json(path, what="config")
    if not isinstance(data, dict):
        raise ConfigError("config must be a mapping of keys to values", path=source,
                          fix="start the file with keys such as 'classifier:' and 'recipe:'")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}", path=source,
                          fix=f"use only: {', '.join(sorted(KNOWN_KEYS))}")
    if not data.get("classifier") or not isinstance(data["classifier"], str):
        raise ConfigError("config needs 'classifier: <plugin name>'", path=source,
                          fix="add e.g. 'classifier: ast' (run `steth plugins` for names)")
    for key in ("model", "recipe", "evaluation"):
        if data.get(key) is None:
            data[key] = {}
        if not isinstance(data[key], dict):
            raise ConfigError(f"'{key}' must be a mapping", path=source, fix=f"indent the {key} settings under '{key}:'")
    from steth_hub.train import check_recipe_values  # light: numbers checked before any command does work

    check_recipe_values(data["recipe"], source=source)
    name = data.get("name") or (Path(source).stem if source else data["classifier"])
    return Experiment(name=str(name), classifier=data["classifier"], model=data["model"],
                      preset=data.get("preset", "excerpt-10s"), recipe=data["recipe"],
                      description=str(data.get("description") or ""), evaluation=data["evaluation"],
                      source=source)
