"""The README's quick start and CI agree: .ci/run runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_ci_runs_the_readmes_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert quick_start_commands()[1].strip() in ci


def test_shipped_examples_named_by_the_main_job_exist():
    main_job = quick_start_commands()[0]
    pattern = re.search(r"(steth_hub/examples/\S+)", main_job).group(1)
    assert sorted(REPO.glob(pattern)), f"{pattern} matches no file"
