"""The ``screen`` extra alone, in a fresh virtual environment: torch absent, the shipped examples screened.

This is the issue's acceptance test for the light runtime. It builds steth-hub from this
checkout into a new venv with ``pip install 'steth-hub[screen]'`` (from the package index,
about 20-60 s; set ``STETH_SCREEN_WHEELHOUSE`` to a folder of wheels to install offline with
``--no-index --find-links``), checks that ``import torch`` fails there, screens the shipped
examples with ``steth screen --json`` and compares every result with the torch path of this
(full) environment: P(asthma) within 1e-4 per recording, identical decisions and warnings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


def _copy_sources(dest: Path) -> Path:
    """What a wheel is built from, without caches, build folders or virtual envs."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc", "build", "dist")
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    for name in ("steth_hub", "plugins"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


@pytest.mark.slow
def test_screen_extra_alone_screens_the_examples_without_torch(tmp_path, example_wavs):
    src = _copy_sources(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, steth = venv / "bin" / "python", venv / "bin" / "steth"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    wheelhouse = os.environ.get("STETH_SCREEN_WHEELHOUSE")
    if wheelhouse:
        pip += ["--no-index", "--find-links", wheelhouse]
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "STETH_RUNTIME"}}
    proc = subprocess.run([*pip, f"{src}[screen]"], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    missing = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and "No module named 'torch'" in missing.stderr
    absent = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in ('torch', 'transformers', "
                                            "'datasets', 'huggingface_hub') if u.find_spec(m)])"],
                            capture_output=True, text=True, env=env, check=True)
    assert absent.stdout.strip() == "[]"

    run = subprocess.run([str(steth), "screen", "--json", *map(str, example_wavs)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    light = json.loads(run.stdout)
    assert len(light["results"]) == len(example_wavs) == 7 and not light["failures"]

    from steth_hub.screening import load_model, screen

    heavy = load_model(None, runtime="torch")  # the default model, as the light venv screened with
    for got in light["results"]:
        want = screen(got["source"], model=heavy)
        assert abs(got["probability"] - want.probability) <= TOLERANCE, got["source"]
        assert got["decision"] == want.decision and got["warnings"] == want.warnings
        assert got["n_clips"] == want.n_clips and got["model"] == want.model
