"""Experiment configs: the shipped ones parse, bad ones fail with the file and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from steth_hub.errors import ConfigError
from steth_hub.experiment import load_experiment

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse_and_name_an_installed_classifier(path):
    from steth_hub.registry import get_registry

    exp = load_experiment(path)
    assert exp.classifier in get_registry().names("classifier"), f"{path.name}: unknown classifier"
    assert exp.source == str(path)


def test_dict_configs_and_recipe_overrides():
    exp = load_experiment({"classifier": "ast", "recipe": {"num_train_epochs": 25}})
    assert exp.name == "ast" and exp.preset == "excerpt-10s"
    quick = exp.with_recipe(num_train_epochs=1)
    assert quick.recipe["num_train_epochs"] == 1 and exp.recipe["num_train_epochs"] == 25


@pytest.mark.parametrize("text,words", [
    ("classifier: [ast\n", "cannot parse"),
    ("- just\n- a list\n", "mapping"),
    ("recipe: {}\n", "classifier: <plugin name>"),
    ("classifier: ast\nrecipie: {}\n", "unknown config key(s): recipie"),
    ("classifier: ast\nrecipe: 3\n", "'recipe' must be a mapping"),
])
def test_bad_configs_name_the_file_and_the_problem(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert str(path) in str(err.value) and words in str(err.value) and "fix:" in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")
