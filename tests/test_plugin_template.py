"""A contributor's classifier plugin, built and installed from a folder with no network.

The template in plugins/example-classifier is copied to a temporary folder, installed with
`pip install --no-deps --no-build-isolation --target`, and a fresh interpreter must list it
next to the built-in plugins; a deliberately broken distribution installed beside it is
reported while everything else keeps working. The template's model is then trained on
real clips, saved and loaded back through the registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "plugins" / "example-classifier"

pytestmark = pytest.mark.slow


def _pip_install(src: Path, target: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--quiet", "--target", str(target), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _run(code: str, site: Path, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(site), **env}
    full_env.pop("STETH_HUB_STRICT_PLUGINS", None) if "STETH_HUB_STRICT_PLUGINS" not in env else None
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=site)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    site = root / "site"
    src = root / "example-classifier"
    shutil.copytree(TEMPLATE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    _pip_install(src, site)
    broken = root / "broken"
    (broken / "steth_broken_example").mkdir(parents=True)
    (broken / "steth_broken_example" / "__init__.py").write_text("import this_dependency_is_not_installed\n")
    (broken / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "steth-broken-example"
        version = "0.0.1"
        [project.entry-points.steth_hub]
        broken = "steth_broken_example"
        [tool.setuptools]
        packages = ["steth_broken_example"]
    """))
    _pip_install(broken, site)
    return site


def test_installed_plugin_is_listed_and_broken_one_reported(site):
    done = _run("""
        import json
        from steth_hub.cli import main
        from steth_hub.registry import get_registry
        main(["plugins", "--json"], standalone_mode=False)
        print(json.dumps([[p.name, p.distribution, p.status] for p in get_registry().plugins]))
    """, site)
    assert done.returncode == 0, done.stderr
    *table, records = done.stdout.strip().splitlines()
    rows = json.loads("\n".join(table))
    builtin = [r for r in json.loads(records) if r[1] == "steth-hub"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["example-band-energy"]["distribution"] == "steth-example-classifier"
    assert by_name["example-band-energy"]["kind"] == "classifier"
    assert by_name["example-band-energy"]["status"] == "ok"
    assert by_name["broken"]["distribution"] == "steth-broken-example"
    assert "this_dependency_is_not_installed" in by_name["broken"]["status"]
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["steth_hub"]
    assert sorted(name for name, _, _ in builtin) == sorted(declared), builtin  # every built-in module, found
    assert all(status == "ok" for _, _, status in builtin), builtin


def test_strict_mode_refuses_the_broken_plugin(site):
    done = _run("""
        from steth_hub.registry import get_registry
        get_registry()
    """, site, STETH_HUB_STRICT_PLUGINS="1")
    assert done.returncode != 0
    assert "steth-broken-example" in done.stderr and "this_dependency_is_not_installed" in done.stderr


def test_installed_plugin_trains_saves_and_loads_through_the_registry(site, tmp_path, example_wavs):
    wavs = [str(p) for p in example_wavs]
    done = _run(f"""
        import json, numpy as np
        from steth_hub.audio import decode
        from steth_hub.clips import ClipSet
        from steth_hub.classifier import load_classifier
        from steth_hub.registry import get_registry

        wavs = {wavs!r}
        clips, labels, patients = [], [], []
        for path in wavs:
            rec = decode(path)
            x = rec.samples[: 4 * rec.sample_rate]
            clips.append(x[:20000] if len(x) >= 20000 else np.pad(x, (0, 20000 - len(x))))
            labels.append(1 if "sthma" in path else 0)
            patients.append(path)
        train = ClipSet(np.stack(clips), 4000, labels, patients, patients, [0.0] * len(wavs))
        cls = get_registry().get("classifier", "example-band-energy").load()
        model = cls.from_config({{"n_bands": 8}})
        history = model.fit(train, recipe={{"steps": 400}})
        assert history["loss"][-1] < history["loss"][0]
        before = model.predict_proba(train.waveforms)
        model.save_pretrained({str(tmp_path / "model")!r})
        again = load_classifier({str(tmp_path / "model")!r})
        after = again.predict_proba(train.waveforms)
        meta = json.load(open({str(tmp_path / "model" / "steth.json")!r}))
        print(json.dumps({{"max_diff": float(np.abs(before - after).max()), "type": type(again).__name__,
                          "distribution": meta.get("distribution"),
                          "first_loss": history["loss"][0], "last_loss": history["loss"][-1]}}))
    """, site)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["type"] == "BandEnergyClassifier"
    assert result["distribution"] == "steth-example-classifier"  # a loader without it can say what to install
    assert result["max_diff"] < 1e-6
    assert result["last_loss"] < 0.8 * result["first_loss"]
