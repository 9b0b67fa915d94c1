"""``steth plugins --kind``: an unknown kind is an error naming the known kinds."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from steth_hub.cli import main
from steth_hub.specs import KINDS


@pytest.mark.parametrize("typo, closest", [("explainers", "explainer"), ("feature-extractor", "feature_extractor"),
                                           ("classifer", "classifier")])
def test_an_unknown_kind_fails_naming_the_kinds_and_the_closest(typo, closest):
    result = CliRunner().invoke(main, ["plugins", "--kind", typo])
    assert result.exit_code == 2, result.output
    assert f"unknown plugin kind {typo!r}" in result.output
    assert f"Did you mean {closest!r}?" in result.output
    for kind in KINDS:
        assert kind in result.output


def test_a_known_kind_lists_only_that_kind():
    result = CliRunner().invoke(main, ["plugins", "--kind", "explainer", "--json"])
    assert result.exit_code == 0, result.output
    assert '"kind": "explainer"' in result.output
    assert '"kind": "classifier"' not in result.output
