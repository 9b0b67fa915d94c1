"""Presets: built-ins and their YAML mirrors, loading, recording, and bad configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steth_hub.audio import decode
from steth_hub.errors import ConfigError, RecordingRejected, StethError, UnknownPluginError
from steth_hub.preprocess import BUILTIN_PRESETS, DEFAULT_PRESET, Preprocessor, Preset, load_preset

REPO = Path(__file__).resolve().parents[1]
PRESET_DIR = REPO / "configs" / "presets"


@pytest.mark.parametrize("name", list(BUILTIN_PRESETS))
def test_yaml_mirror_agrees_with_the_builtin(name):
    from_yaml = load_preset(PRESET_DIR / f"{name}.yaml")
    assert from_yaml.to_dict() == load_preset(name).to_dict()
    assert from_yaml.source.endswith(f"{name}.yaml")


def test_every_yaml_preset_is_a_builtin():
    assert sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) == sorted(BUILTIN_PRESETS)


def test_default_preset_fits_10s_excerpts():
    preset = load_preset()
    assert preset.name == DEFAULT_PRESET == "excerpt-10s"
    assert preset.sample_rate == 16000 and preset.clip_seconds == 5.0
    names = [name for name, _ in preset.steps]
    assert names == ["min-duration", "clipping", "trim", "bandlimit", "resample", "cut", "normalise"]
    params = dict(preset.steps)
    assert params["clipping"]["method"] == "plateau" and params["bandlimit"]["max_hz"] == 2000.0
    assert 50 <= params["cut"]["overlap"] <= 75


def test_paper_preset_has_the_papers_values():
    params = dict(load_preset("paper").steps)
    assert params["min-duration"] == {"seconds": 14.0}
    assert params["trim"] == {"seconds": 2.0}
    assert params["cut"] == {"seconds": 5.0, "overlap": 50.0}
    assert params["resample"] == {"sample_rate": 16000}
    assert params["clipping"]["method"] == "plateau"  # the working detector; says so in its description
    assert "paper-p95" in load_preset("paper").description


def test_to_dict_records_every_default_and_round_trips():
    preset = load_preset({"name": "mine", "steps": ["clipping", {"trim": None}, {"step": "cut", "params": {"seconds": 2}},
                                                    ("normalise", {"method": "rms"})]})
    data = preset.to_dict()
    assert data["steps"] == [
        {"clipping": {"method": "plateau", "max_share": 0.001, "min_run": 3, "tolerance": 0.0001}},
        {"trim": {"seconds": 0.5}},
        {"cut": {"seconds": 2.0, "overlap": 50.0}},
        {"normalise": {"method": "rms", "target": 0.1}},
    ]
    assert data["sample_rate"] is None and data["clip_seconds"] == 2.0
    json.dumps(data)  # goes into steth.json as it is
    again = Preset.from_dict(json.loads(json.dumps(data)))
    assert again.to_dict() == data and again.fingerprint() == preset.fingerprint()
    other = load_preset({"name": "mine", "steps": [{"cut": {"seconds": 3}}]})
    assert other.fingerprint() != preset.fingerprint()


def test_a_yaml_preset_file_runs(tmp_path, examples_dir):
    path = tmp_path / "short-clips.yaml"
    path.write_text("name: short-clips\nsteps:\n  - clipping: {method: plateau}\n  - resample: {sample_rate: 8000}\n"
                    "  - cut: {seconds: 2, overlap: 0}\n  - normalise: {method: peak}\n", encoding="utf-8")
    clips = Preprocessor(path).run(examples_dir / "kauh/DP72_N,N,P R U,24,F_middle10sec.wav")
    assert len(clips) == 5 and {len(c.samples) for c in clips} == {16000}
    assert [c.start for c in clips] == pytest.approx([0, 2, 4, 6, 8])


def test_paper_clipping_rule_in_a_preset_rejects_a_clean_real_recording(examples_dir):
    preset = {"name": "paper-rule", "steps": [{"clipping": {"method": "paper-p95"}}]}
    rec = decode(examples_dir / "kauh/DP72_N,N,P R U,24,F_middle10sec.wav")
    with pytest.raises(RecordingRejected) as info:
        Preprocessor(preset).run(rec)
    assert info.value.code == "clipped" and "paper-p95" in info.value.message


@pytest.mark.parametrize("text, error, words", [
    ("name: x\nsteps:\n  - trim: {secs: 1}\n", ConfigError, "trim"),
    ("name: x\nsteps:\n  - cut: {seconds: 5, overlap: 100}\n", ConfigError, "overlap"),
    ("name: x\nsteps:\n  - clipping: {method: loudest}\n", ConfigError, "clipping method"),
    ("name: x\nsteps: []\n", ConfigError, "no steps"),
    ("name: x\nstep:\n  - trim\n", ConfigError, "unknown preset key"),
    ("name: x\nsteps:\n  - trim: 0.5\n", ConfigError, "must be a mapping"),
    ("name: x\nsample_rate: 8000\nsteps:\n  - resample: {sample_rate: 16000}\n", ConfigError, "derived"),
    ("name: x\nsteps:\n  - trim: {seconds: [1\n", ConfigError, "cannot parse"),
    ("name: x\nsteps:\n  - trimm: {seconds: 1}\n", UnknownPluginError, "did you mean 'trim'"),
])
def test_bad_presets_name_the_file_and_the_fix(tmp_path, text, error, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(error) as info:
        load_preset(path)
    assert words in str(info.value)
    assert isinstance(info.value, StethError) and info.value.fix
    assert str(path) in str(info.value)


def test_unknown_preset_name_lists_the_builtins():
    with pytest.raises(ConfigError) as info:
        load_preset("excerpt-5s")
    assert "excerpt-10s" in info.value.fix and "paper" in info.value.fix


def test_modules_import_nothing_heavy():
    code = ("import sys, steth_hub.preprocess, steth_hub.clipping, steth_hub.clips, steth_hub.features, "
            "steth_hub.commands.preprocess, steth_hub.commands.features, steth_builtin.preprocessors, "
            "steth_builtin.features\n"
            "from steth_hub.preprocess import load_preset; load_preset('paper')\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'gradio', 'timm', 'sklearn', 'librosa') "
            "if m in sys.modules]\nprint(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
