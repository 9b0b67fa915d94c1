"""spaces/ deploys as it is: a Space README with a valid header, requirements that install
steth-hub with the demo extra, and an app.py that builds the same app as ``steth demo``."""

from __future__ import annotations

import re
import runpy
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "spaces"


def _header() -> dict:
    text = (SPACES / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "a Space README starts with its YAML header"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_the_space_folder_is_complete_with_a_valid_header():
    assert sorted(p.name for p in SPACES.iterdir() if not p.name.startswith((".", "__"))) == [
        "README.md", "app.py", "requirements.txt"]
    header = _header()
    assert header["sdk"] == "gradio" and header["sdk_version"] == metadata.version("gradio")
    assert (SPACES / header["app_file"]).is_file() and header["app_file"] == "app.py"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert header["license"] == project["license"].lower()
    assert header["title"] and header["emoji"] and len(header["short_description"]) <= 60
    assert {"audio-classification", "asthma"} <= set(header["tags"])
    assert "not a diagnosis" in (SPACES / "README.md").read_text(encoding="utf-8")


def test_requirements_install_steth_hub_with_the_demo_extra_and_the_torch_pair_it_pins():
    lines = [line.strip() for line in (SPACES / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert any(re.match(r"steth-hub\[demo\] @ git\+https://github\.com/steth-hub/steth-hub", line) for line in lines)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {re.split(r"[<>=]", req)[0]: req for req in project["optional-dependencies"]["train"]}
    for package in ("torch", "torchvision"):
        top = re.search(r"<=([\d.]+)", pins[package]).group(1)
        assert f"{package}=={top}" in lines, f"{package} pinned to the top of steth-hub's range ({top})"
    assert not any(line.startswith("gradio") for line in lines), "the Space installs gradio from sdk_version"


def test_app_py_sets_analytics_off_before_importing_gradio():
    source = (SPACES / "app.py").read_text()
    assert source.index('os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"') < source.index("from steth_hub")
    assert "launch(demo, host=None)" in source  # the Space's GRADIO_SERVER_NAME decides where it listens


def _fingerprint(app) -> tuple:
    config = app.get_config_file()
    components = [(c["type"], c["props"].get("label"), c["props"].get("elem_id"), str(c["props"].get("choices")),
                   str(c["props"].get("value"))) for c in config["components"]]
    events = [(d.get("api_name"), len(d["inputs"]), len(d["outputs"]), d.get("api_visibility"))
              for d in config["dependencies"]]
    return components, events


def test_app_py_builds_the_same_app_as_build_app(monkeypatch):
    from steth_hub.demo import DemoSettings, build_app, settings_from_env

    monkeypatch.setenv("STETH_DEMO_MAX_SECONDS", "30")
    monkeypatch.setenv("STETH_DEMO_MAX_MB", "5")
    monkeypatch.setenv("STETH_DEMO_CONCURRENCY", "2")
    space = runpy.run_path(str(SPACES / "app.py"), run_name="space_app")["demo"]  # not __main__: no launch
    reference = build_app(**settings_from_env())
    assert space.steth_screener.settings == reference.steth_screener.settings == DemoSettings(
        max_seconds=30, max_bytes=5 * 2**20, concurrency=2)
    assert _fingerprint(space) == _fingerprint(reference)
    assert any(c[2] == "steth-run" for c in _fingerprint(space)[0])
    assert space.config["analytics_enabled"] is False

