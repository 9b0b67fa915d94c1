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


def test_the_ast_fbank_summary_says_its_settings_not_a_fixed_front_end():
    from steth_hub.registry import get_registry

    summary = get_registry().get("feature_extractor", "ast-fbank").summary
    assert "\n" not in summary and len(summary) <= 160
    assert "num_mel_bins bands (128 by default)" in summary
    assert "400-sample windows every 160 at its own rate (25/10 ms at 16 kHz)" in summary
    assert "[N, T, 128]" not in summary
