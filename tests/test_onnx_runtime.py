"""The light screening runtime: ONNX export of torch classifiers and screening without torch.

Every comparison is on real clips (the shipped examples, and the shared recordings when
present). The stated tolerance: P(asthma) per clip from the ONNX path (numpy front end +
ONNX Runtime) is within 1e-4 of the torch path, and every screening decision is identical.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from steth_hub.errors import ModelError
from steth_hub.onnx_export import DEFAULT_TOLERANCE, ONNX_FILE

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread (conftest.py)

TOLERANCE = 1e-4  # the stated tolerance on P(asthma), per clip and per recording
TINY_4K = {"size": "tiny", "num_hidden_layers": 1, "front_end": {"sampling_rate": 4000, "num_mel_bins": 64}}
AST = "steth/ast-asthma"
EMBEDDED = Path(__file__).resolve().parents[1] / "steth_hub" / "models" / "ast-asthma"


def _clips(model, paths) -> np.ndarray:
    from steth_hub.screening import ScreeningPipeline, to_recording

    pipeline = ScreeningPipeline(model)
    out = []
    for path in paths:
        clips, _ = pipeline.clips(to_recording(path, None), str(path))
        out += [c.samples for c in clips]
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def torch_model():
    from steth_hub.screening import load_model

    return load_model(AST, runtime="torch")


@pytest.fixture(scope="module")
def onnx_model():
    from steth_hub.runtime import OnnxClassifier

    return OnnxClassifier.from_pretrained(EMBEDDED)


@pytest.fixture(scope="module")
def example_waveforms(torch_model, example_wavs):
    return _clips(torch_model, example_wavs)


def _tiny_ast_folder(waveforms, folder: Path):
    """A tiny 4 kHz AST with normalisation fitted on real clips (random weights), saved like a trained one."""
    from steth_builtin.ast_model import ASTClassifier

    model = ASTClassifier.from_config(TINY_4K)
    model.preset = {"name": "excerpt-10s"}
    from steth_hub.preprocess import load_preset

    model.preset = load_preset("excerpt-10s").to_dict()
    model.fit_normalisation(model.featurise(waveforms, 16000))
    model.fold_normalisation()
    model.net.eval()
    model.save_pretrained(folder)
    return model


# --------------------------------------------------------------------------- the numpy front end
def test_numpy_ast_front_end_is_featurise_exactly(torch_model, example_waveforms):
    from steth_hub.features import ASTFrontEnd, NumpyASTFrontEnd

    spec = torch_model.onnx_frontend()
    assert spec["name"] == "ast-fbank-numpy"
    numpy_fe = NumpyASTFrontEnd(**spec["config"])
    got = numpy_fe(example_waveforms, torch_model.sample_rate)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, torch_model.featurise(example_waveforms, torch_model.sample_rate).numpy())
    # the published 16 kHz / 128-bin front end too, padded past the clip's frames
    wide = ASTFrontEnd(sampling_rate=16000, num_mel_bins=128, max_length=520, do_normalize=False)
    np.testing.assert_array_equal(NumpyASTFrontEnd(16000, 128, 520)(example_waveforms[:2], 16000),
                                  wide(example_waveforms[:2], 16000).numpy())


def test_numpy_front_end_is_registered_without_torch():
    code = ("import sys\nfrom steth_hub.registry import get_registry\n"
            "fe = get_registry().get('feature_extractor', 'ast-fbank-numpy').create(sampling_rate=4000, "
            "num_mel_bins=64, max_length=123)\n"
            "import numpy as np\nx = fe(np.random.default_rng(0).normal(size=(2, 80000)).astype('float32'), 16000)\n"
            "print(x.shape, [m for m in ('torch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(2, 123, 64) []", out


# --------------------------------------------------------------------------- the shipped export
def test_every_embedded_model_ships_an_export_that_matches_its_weights():
    from steth_hub.hub import DEFAULT_MODEL, EMBEDDED as SHIPPED
    from steth_hub.onnx_export import weights_digest
    from steth_hub.registry import get_registry

    shipped = {name: folder for name, folder in SHIPPED.items() if (folder / "steth.json").is_file()}
    assert AST in shipped and DEFAULT_MODEL in shipped, sorted(shipped)
    from steth_hub.classifier import Classifier
    from steth_hub.torch_classifier import TorchClassifier

    exported = set()
    for name, folder in shipped.items():
        meta = json.loads((folder / "steth.json").read_text())
        block = meta.get("onnx")
        cls = get_registry().get("classifier", meta["plugin"]).load()
        opts_in = getattr(cls, "onnx_frontend", None) not in (None, TorchClassifier.onnx_frontend,
                                                               getattr(Classifier, "onnx_frontend", None))
        if not opts_in:  # a plugin without a torch-free front end (the VLM) screens with torch
            assert block is None, f"{name}: an ONNX block but its plugin {meta['plugin']!r} does not opt in"
            continue
        exported.add(name)
        assert block, f"{name} has no ONNX export: run `steth export {name}`"
        assert (folder / block["file"]).is_file()
        assert block["max_abs_diff"] <= block["tolerance"] <= TOLERANCE
        assert block["weights"] == weights_digest(folder), f"{name}: re-export it (steth export {name})"
        spec = get_registry().get("feature_extractor", block["frontend"]["name"])
        assert not {"torch", "transformers"} & set(spec.requires), spec
    assert {AST, DEFAULT_MODEL} <= exported  # every model whose plugin opts in ships its export
    assert json.loads((EMBEDDED / "steth.json").read_text())["onnx"]["frontend"]["name"] == "ast-fbank-numpy"


def test_onnx_and_torch_agree_on_the_shipped_examples(torch_model, onnx_model, example_waveforms):
    torch_p = torch_model.predict_proba(example_waveforms)
    onnx_p = onnx_model.predict_proba(example_waveforms)
    assert onnx_p.shape == torch_p.shape == (len(example_waveforms),)
    assert np.abs(onnx_p - torch_p).max() <= TOLERANCE
    assert (onnx_model.decide(onnx_p) == torch_model.decide(torch_p)).all()
    # the batch axis is dynamic: one clip, and more clips than one ONNX Runtime call takes
    assert abs(onnx_model.predict_proba(example_waveforms[:1])[0] - torch_p[0]) <= TOLERANCE
    onnx_model.predict_batch_size = 4
    try:
        np.testing.assert_allclose(onnx_model.predict_proba(example_waveforms), onnx_p, atol=1e-6)
    finally:
        onnx_model.predict_batch_size = 32


@pytest.mark.shared_data
def test_identical_decisions_on_the_shared_recordings(shared_data, torch_model, onnx_model):
    from steth_hub.screening import screen_many

    paths = sorted(shared_data.glob("*/*.wav"))[::4]  # every 4th recording of KAUH and ICBHI
    assert len(paths) >= 20
    light, failed_light = screen_many(paths, model=onnx_model, progress=False)
    heavy, failed_heavy = screen_many(paths, model=torch_model, progress=False)
    assert [f["source"] for f in failed_light] == [f["source"] for f in failed_heavy]
    assert [r.source for r in light] == [r.source for r in heavy] and len(light) >= 20
    diffs = [abs(a.probability - b.probability) for a, b in zip(light, heavy)]
    assert max(diffs) <= TOLERANCE
    assert [a.decision for a in light] == [b.decision for b in heavy]
    assert [a.warnings for a in light] == [b.warnings for b in heavy]


def test_screen_uses_the_light_runtime_by_default_and_torch_on_request(monkeypatch, example_wavs):
    from steth_hub import screening
    from steth_hub.classifier import Classifier
    from steth_hub.runtime import OnnxClassifier

    monkeypatch.setattr(screening, "_MODEL_CACHE", {})
    monkeypatch.delenv("STETH_RUNTIME", raising=False)
    assert isinstance(screening.load_model(), OnnxClassifier)  # the default model
    light = screening.load_model(AST)
    threshold = json.loads((EMBEDDED / "steth.json").read_text())["threshold"]
    assert isinstance(light, OnnxClassifier) and light.threshold == pytest.approx(threshold)
    assert screening.load_model(light) is light
    heavy = screening.load_model(light, runtime="torch")  # what explain() asks for
    assert isinstance(heavy, Classifier)
    monkeypatch.setenv("STETH_RUNTIME", "torch")
    assert isinstance(screening.load_model(), Classifier) and isinstance(screening.load_model(AST), Classifier)
    a = screening.screen(example_wavs[2], model=light)
    b = screening.screen(example_wavs[2], model=heavy)
    assert abs(a.probability - b.probability) <= TOLERANCE and a.decision == b.decision
    assert a.model == b.model == "steth/ast-asthma" and a.n_clips == b.n_clips
    with pytest.raises(ModelError, match="unknown screening runtime"):
        screening.load_model(runtime="tensorflow")


def test_steth_screen_imports_no_torch(example_wavs):
    code = ("import sys\nfrom steth_hub.cli import main\n"
            "try:\n    main(['screen', '--quiet', *sys.argv[1:]])\nexcept SystemExit as exc:\n    assert not exc.code\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'gradio') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, example_wavs)], capture_output=True, text=True,
                          env={**__import__("os").environ, "STETH_RUNTIME": ""})
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout and "7 screened, 0 failed" in proc.stdout, proc.stdout


# --------------------------------------------------------------------------- exporting
def test_export_a_tiny_ast_and_screen_it_without_torch(tmp_path, example_waveforms):
    from steth_hub.onnx_export import export_folder
    from steth_hub.runtime import OnnxClassifier

    folder = tmp_path / "tiny"
    model = _tiny_ast_folder(example_waveforms, folder)
    block = export_folder(folder, model)
    assert (folder / ONNX_FILE).is_file()
    saved = json.loads((folder / "steth.json").read_text())["onnx"]
    assert saved == json.loads(json.dumps(block))
    assert saved["max_abs_diff"] <= DEFAULT_TOLERANCE and saved["n_clips"] == len(example_waveforms)
    assert saved["input"]["shape"] == ["batch", model.max_length, 64] and saved["band_hz"][1] == 2000.0
    light = OnnxClassifier.from_pretrained(folder)
    np.testing.assert_allclose(light.predict_proba(example_waveforms), model.predict_proba(example_waveforms),
                               atol=TOLERANCE)
    assert light.band_hz() == (20.0, 2000.0)


def test_an_export_that_disagrees_with_torch_writes_nothing(tmp_path, example_waveforms, monkeypatch):
    from steth_builtin.ast_model import ASTClassifier
    from steth_hub.onnx_export import export_folder

    folder = tmp_path / "tiny"
    model = _tiny_ast_folder(example_waveforms, folder)
    # a front end at the wrong rate: same shape, other numbers
    monkeypatch.setattr(ASTClassifier, "onnx_frontend", lambda self: {
        "name": "ast-fbank-numpy", "config": {"sampling_rate": 8000, "num_mel_bins": 64,
                                              "max_length": int(self.max_length)}})
    with pytest.raises(ModelError, match="differs from the torch path"):
        export_folder(folder, model)
    assert not (folder / ONNX_FILE).exists() and "onnx" not in json.loads((folder / "steth.json").read_text())


def test_a_classifier_that_does_not_opt_in_is_refused(tmp_path, example_waveforms, monkeypatch):
    from steth_builtin.ast_model import ASTClassifier
    from steth_hub.onnx_export import export_after_training, export_folder

    folder = tmp_path / "tiny"
    model = _tiny_ast_folder(example_waveforms, folder)
    monkeypatch.setattr(ASTClassifier, "onnx_frontend", lambda self: None)
    with pytest.raises(ModelError, match="no ONNX export"):
        export_folder(folder, model)
    assert export_after_training(model, folder) is None and not (folder / ONNX_FILE).exists()


def test_a_stale_export_is_refused_and_auto_falls_back_to_torch(tmp_path, example_waveforms, monkeypatch, caplog):
    from steth_hub import screening
    from steth_hub.classifier import Classifier
    from steth_hub.onnx_export import export_folder
    from steth_hub.runtime import OnnxClassifier

    folder = tmp_path / "tiny"
    model = _tiny_ast_folder(example_waveforms, folder)
    export_folder(folder, model)
    onnx_bytes, meta = (folder / ONNX_FILE).read_bytes(), (folder / "steth.json").read_text()
    import torch

    with torch.no_grad():  # retrain by hand: other weights in the same folder, the old export beside them
        model.net.classifier.dense.bias.add_(1.0)
    model.save_pretrained(folder)
    (folder / ONNX_FILE).write_bytes(onnx_bytes)
    (folder / "steth.json").write_text(meta)
    with pytest.raises(ModelError, match="exported from other weights") as info:
        OnnxClassifier.from_pretrained(folder)
    assert f"steth export {folder}" in info.value.fix
    monkeypatch.setattr(screening, "_MODEL_CACHE", {})
    monkeypatch.delenv("STETH_RUNTIME", raising=False)
    assert isinstance(screening.load_model(folder), Classifier)  # auto: torch, with a warning
    assert "cannot be used" in caplog.text
    with pytest.raises(ModelError, match="other weights"):
        screening.load_model(folder, runtime="onnx")


def test_runtime_onnx_needs_an_export(tmp_path, example_waveforms, monkeypatch):
    from steth_hub import screening

    folder = tmp_path / "tiny"
    _tiny_ast_folder(example_waveforms, folder)
    monkeypatch.setattr(screening, "_MODEL_CACHE", {})
    with pytest.raises(ModelError, match="no ONNX export") as info:
        screening.load_model(folder, runtime="onnx")
    assert "steth export" in info.value.fix


def test_steth_export_cli(tmp_path):
    from click.testing import CliRunner

    from steth_hub.cli import main

    folder = tmp_path / "ast-asthma"
    shutil.copytree(EMBEDDED, folder)
    (folder / ONNX_FILE).unlink()
    meta = json.loads((folder / "steth.json").read_text())
    del meta["onnx"]
    (folder / "steth.json").write_text(json.dumps(meta))
    result = CliRunner().invoke(main, ["export", str(folder)])
    assert result.exit_code == 0, result.output
    assert "clip decisions agree 21/21" in result.output
    block = json.loads((folder / "steth.json").read_text())["onnx"]
    assert block["max_abs_diff"] <= TOLERANCE and (folder / ONNX_FILE).is_file()
    assert block["weights"] == json.loads((EMBEDDED / "steth.json").read_text())["onnx"]["weights"]
    result = CliRunner().invoke(main, ["export", "someone/some-model"])
    assert result.exit_code == 2 and "writes into a model folder" in result.output


@pytest.mark.slow
def test_steth_train_exports_a_model_that_opts_in(tmp_path, torch_model, example_wavs):
    from steth_hub.clips import ClipSet
    from steth_hub.errors import RecordingRejected
    from steth_hub.preprocess import Preprocessor
    from steth_hub.runtime import has_onnx_export
    from steth_hub.experiment import train_on_clips

    pre, sets = Preprocessor("excerpt-10s"), []
    for path in example_wavs:
        try:
            clips = pre.run(path, path.stem)
        except RecordingRejected:
            continue
        sets.append(ClipSet.from_clips(clips, [int("asthma" in path.name.lower())] * len(clips),
                                       [path.stem.split("_")[0]] * len(clips)))
    experiment = {"name": "tiny", "classifier": "ast", "model": TINY_4K, "preset": "excerpt-10s",
                  "recipe": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "warmup_steps": 0,
                             "logging_steps": 1, "save_steps": 1000, "disable_tqdm": True}}
    model, _ = train_on_clips(experiment, ClipSet.concatenate(sets), tmp_path / "m", valid_fraction=0.0,
                              progress=False)
    assert has_onnx_export(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "steth.json").read_text())["onnx"]["max_abs_diff"] <= TOLERANCE
