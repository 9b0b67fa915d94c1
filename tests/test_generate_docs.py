"""The generator measurements in docs/generators.md are the kept result files, rendered by the scripts'
own table functions (so a re-run that changes a number must change the docs too)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "generators" / "results"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script, result", [("generators_check", "check.json"), ("generators_check", "check-floor.json"),
                                            ("generators_fad", "fad.json"), ("generators_augment", "augment.json"),
                                            ("generators_augment", "augment-efficientat-probe.json")])
def test_docs_tables_are_the_kept_results(script, result):
    report = json.loads((RESULTS / result).read_text())
    table = _script(script).table(report).strip()
    assert table in (REPO / "docs" / "generators.md").read_text()


def test_the_augmentation_never_scored_a_synthetic_clip_and_the_listening_files_exist():
    report = json.loads((RESULTS / "augment.json").read_text())
    assert report["synthetic_scored"] == 0 and report["ratios"] == [0.0, 0.25, 0.5, 1.0]
    listen = json.loads((REPO / "docs" / "generators" / "listening.json").read_text())
    for row in listen["rows"]:
        assert (REPO / "docs" / "generators" / row["real"]).is_file()
        assert (REPO / "docs" / "generators" / row["synthetic"]).is_file()
