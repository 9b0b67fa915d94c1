"""The README's quick start and CI agree: .ci/run runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_quick_start_has_two_commands_run_main_job_and_tests():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "steth screen" in main_job and "pip install" in main_job
    assert "pytest" in tests and "pip install" in tests


def test_main_job_uses_the_light_install_and_tests_the_full_one():
    """Screening needs only the screen extra (no torch); the tests install everything (tests/test_screen_extra.py
    checks that the screen extra alone screens the shipped examples)."""
    main_job, tests = quick_start_commands()
    assert "'.[screen]'" in main_job and "train" not in main_job and "dev" not in main_job
    assert "'.[dev]'" in tests
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(dep.split(">")[0].split("=")[0].strip() in {"torch", "transformers", "datasets"}
                   for dep in extras["screen"])
    assert any(dep.startswith("onnxruntime") for dep in extras["screen"])


def test_ci_runs_the_readmes_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert quick_start_commands()[1].strip() in ci


def test_shipped_examples_named_by_the_main_job_exist():
    main_job = quick_start_commands()[0]
    pattern = re.search(r"(steth_hub/examples/\S+)", main_job).group(1)
    assert sorted(REPO.glob(pattern)), f"{pattern} matches no file"
