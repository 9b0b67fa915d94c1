"""Screening: the embedded model on the shipped examples, lenient checks, bad inputs, and `steth screen`.

Bad inputs are screened with a tiny AST trained here on real example clips (fast); the
embedded model's own numbers are checked against ``tests/data/ast_asthma_expected.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from steth_hub.errors import AudioError, RecordingRejected
from steth_hub.screening import DISCLAIMER, ScreeningResult, screen, screen_many

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread (conftest.py)

MODELS = Path(__file__).resolve().parents[1] / "steth_hub" / "models"
#: the default model's folder (steth/efficientat-asthma)
EMBEDDED = MODELS / "efficientat-asthma"


@pytest.fixture(scope="module")
def tiny_model(example_wavs, tmp_path_factory):
    """A tiny AST trained for a few steps on real example clips, saved with the default preset."""
    from steth_hub.classifier import load_classifier
    from steth_hub.clips import ClipSet
    from steth_hub.preprocess import Preprocessor, load_preset

    from steth_builtin.ast_model import ASTClassifier

    pre = Preprocessor("excerpt-10s")
    sets = []
    for path in example_wavs:
        try:
            clips = pre.run(path, path.stem)
        except RecordingRejected:
            continue
        label = int("asthma" in path.name.lower())
        sets.append(ClipSet.from_clips(clips, [label] * len(clips), [path.stem] * len(clips)))
    model = ASTClassifier.from_config({"size": "tiny", "num_hidden_layers": 1})
    model.preset = load_preset("excerpt-10s").to_dict()
    model.fit(ClipSet.concatenate(sets), None, {"max_steps": 2, "warmup_steps": 0, "disable_tqdm": True,
                                                "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
              tmp_path_factory.mktemp("run"))
    folder = tmp_path_factory.mktemp("models") / "tiny"
    model.save_pretrained(folder)
    return load_classifier(folder), folder


def _write(path: Path, samples, rate=16000) -> Path:
    sf.write(path, np.asarray(samples, dtype=np.float32), rate, subtype="PCM_16")
    return path


def _real(example_wavs, seconds=None, rate_from=None):
    from steth_hub.audio import decode

    rec = decode([p for p in example_wavs if p.parent.name == "kauh"][0])
    x = rec.samples if seconds is None else rec.samples[: int(seconds * rec.sample_rate)]
    return x, rec.sample_rate


# --------------------------------------------------------------------------- the result
def test_screen_returns_a_complete_result(tiny_model, example_wavs):
    from steth_hub import feature_cache as train

    model, _ = tiny_model
    cached = len(train._FEATURE_CACHE)
    result = screen(example_wavs[-1], model=model)
    assert len(train._FEATURE_CACHE) == cached  # screening keeps no features: memory stays flat
    assert isinstance(result, ScreeningResult)
    assert result.n_clips == 3 == len(result.clip_probabilities) == len(result.clip_starts)
    assert result.probability == pytest.approx(np.mean(result.clip_probabilities))
    assert result.decision == (result.probability >= model.threshold)
    assert result.label == ("asthma" if result.decision else "not_asthma")
    assert result.clip_starts[0] == pytest.approx(0.5) and result.disclaimer == DISCLAIMER
    data = result.to_dict()
    assert json.loads(json.dumps(data))["n_clips"] == 3 and "not a diagnosis" in str(result)
    # what screening computed stays on the result for the explanation, never in its JSON or repr
    computed = result.computed
    assert "computed" not in data and "computed" not in repr(result)
    assert computed.model is model and len(computed.clips) == 3 and computed.waveforms.dtype == np.float32
    assert computed.waveforms.shape == (3, model.sample_rate * 5) and computed.recording.source == result.source
    assert np.array_equal(computed.probabilities, result.clip_probabilities)
    results, _ = screen_many([example_wavs[-1]], model=model, progress=False)  # a batch holds no audio
    assert results[0].computed is None and results[0] == result


def test_screen_an_array_needs_its_rate_and_matches_the_file(tiny_model, example_wavs):
    model, _ = tiny_model
    x, rate = _real(example_wavs)
    with pytest.raises(AudioError, match="sample_rate"):
        screen(x, model=model)
    from_array = screen(x, sample_rate=rate, model=model)
    from_file = screen([p for p in example_wavs if p.parent.name == "kauh"][0], model=model)
    assert from_array.probability == pytest.approx(from_file.probability, abs=1e-5)
    # KAUH is 4 kHz: complete up to 2 kHz, all this model reads (its preset band-limits to 2 kHz)
    assert not any("low sample rate" in w for w in from_array.warnings + from_file.warnings)


def test_low_sample_rate_is_flagged_only_when_the_model_reads_higher(tiny_model, example_wavs):
    from steth_hub.audio import resample

    model, _ = tiny_model
    x, rate = _real(example_wavs)
    result = screen(resample(x, rate, 3000), sample_rate=3000, model=model)
    low = [w for w in result.warnings if w.startswith("low sample rate")]
    assert len(low) == 1 and "nothing above 1500 Hz" in low[0] and "reads up to 2000 Hz" in low[0], result.warnings


def test_short_recording_is_screened_with_a_warning(tiny_model, example_wavs, tmp_path):
    """Below the preset's minimum duration (a corpus rejects it) but long enough for one clip."""
    import copy

    model, _ = tiny_model
    strict = copy.copy(model)
    strict.preset = copy.deepcopy(model.preset)
    for step in strict.preset["steps"]:
        if "min-duration" in step:
            step["min-duration"]["seconds"] = 8.0
    x, rate = _real(example_wavs, seconds=7.0)
    result = screen(_write(tmp_path / "short.wav", x, rate), model=strict)
    assert result.n_clips == 1
    assert any("8 s minimum" in w and "shorter than any recording the model was trained on (at least 8 s)" in w
               for w in result.warnings), result.warnings


def test_clipped_recording_is_screened_with_a_warning(tiny_model, examples_dir):
    model, _ = tiny_model
    clipped = examples_dir / "icbhi" / "112_1b1_Ar_sc_Meditron_middle10sec.wav"
    result = screen(clipped, model=model)
    assert result.n_clips == 3 and any("clipped" in w and "treat the result as unreliable" in w
                                       for w in result.warnings), result.warnings


def test_too_short_for_one_clip_is_a_clear_error(tiny_model, example_wavs, tmp_path):
    model, _ = tiny_model
    x, rate = _real(example_wavs, seconds=3.0)
    with pytest.raises(RecordingRejected) as info:
        screen(_write(tmp_path / "three-seconds.wav", x, rate), model=model)
    assert info.value.code == "too-short" and "three-seconds.wav" in str(info.value)
    # said in terms of the recording, with a fix the person screening can act on (no preset talk)
    assert "lasts 3.00 s; this model needs at least 6 s" in info.value.message
    assert info.value.fix.startswith("record at least 6 s") and "preset" not in info.value.fix


def _bad_files(tmp_path: Path, example_wavs) -> dict[str, Path]:
    x, rate = _real(example_wavs)
    files = {
        "corrupt": tmp_path / "corrupt.wav",
        "empty": tmp_path / "empty.wav",
        "silent": _write(tmp_path / "silent.wav", np.zeros(16000 * 8)),
        "too-short": _write(tmp_path / "short.wav", x[: rate * 2], rate),
        "not-finite": tmp_path / "nan.wav",
        "too-long": tmp_path / "huge.wav",
        "missing": tmp_path / "does-not-exist.wav",
    }
    files["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    files["empty"].write_bytes(b"")
    nan = np.sin(np.arange(16000 * 8) / 10.0).astype(np.float32)
    nan[100] = np.nan
    sf.write(files["not-finite"], nan, 16000, subtype="FLOAT")
    sf.write(files["too-long"], np.zeros((8000 * 601,), dtype=np.int16), 8000, subtype="PCM_16")  # 601 s
    return files


def test_bad_inputs_fail_clearly_and_the_batch_goes_on(tiny_model, example_wavs, tmp_path):
    _, folder = tiny_model
    bad = _bad_files(tmp_path, example_wavs)
    good = example_wavs[:2]
    results, failures = screen_many([bad["corrupt"], good[0], *list(bad.values())[1:], good[1]], model=folder,
                                    progress=False)
    assert [r.source for r in results] == [str(p) for p in good]
    codes = {Path(f["source"]).name: f["code"] for f in failures}
    assert codes == {"corrupt.wav": "corrupt", "empty.wav": "empty", "silent.wav": "silent",
                     "short.wav": "too-short", "nan.wav": "not-finite", "huge.wav": "too-long",
                     "does-not-exist.wav": "missing"}
    assert all(f["fix"] and f["message"] for f in failures)
    huge = next(f for f in failures if f["code"] == "too-long")
    assert "max_seconds" not in huge["fix"] and "ffmpeg" in huge["fix"]  # nothing screen cannot do


def test_cli_table_json_and_exit_status(tiny_model, example_wavs, tmp_path):
    from steth_hub.cli import main

    _, folder = tiny_model
    bad = _bad_files(tmp_path, example_wavs)
    runner = CliRunner()
    ok = runner.invoke(main, ["screen", str(example_wavs[0]), str(bad["corrupt"]), "--model", str(folder), "--quiet"])
    assert ok.exit_code == 0, ok.output
    assert "P(ASTHMA)" in ok.output and "1 screened, 1 failed" in ok.output and "not a diagnosis" in ok.output
    assert "corrupt.wav" in ok.output and "fix:" in ok.output
    assert "SCREEN" in ok.output and ("positive (>= " in ok.output or "negative (< " in ok.output)
    expected_name = screen(example_wavs[0], model=folder).model
    assert f"Model: {expected_name}, threshold " in ok.output
    assert "carries no evaluation: its accuracy is unknown" in ok.output  # the tiny model was never evaluated

    as_json = runner.invoke(main, ["screen", str(example_wavs[0]), "--model", str(folder), "--json"])
    data = json.loads(as_json.output)
    assert as_json.exit_code == 0 and data["disclaimer"] == DISCLAIMER and data["results"][0]["n_clips"] == 3

    nothing = runner.invoke(main, ["screen", str(bad["empty"]), str(bad["silent"]), "--model", str(folder)])
    assert nothing.exit_code == 1 and "0 screened, 2 failed" in nothing.output


def test_missing_model_folder_is_a_clear_error(tmp_path, example_wavs):
    from steth_hub.cli import main

    result = CliRunner().invoke(main, ["screen", str(example_wavs[0]), "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "nope" in result.output


# --------------------------------------------------------------------------- the embedded model
@pytest.mark.skipif(not (EMBEDDED / "steth.json").is_file(), reason="the embedded model is not trained yet")
@pytest.mark.parametrize("name,folder", [(None, "efficientat-asthma"), ("steth/ast-asthma", "ast-asthma"),
                                         ("steth/efficientat-asthma-floor", "efficientat-asthma-floor")])
def test_embedded_model_matches_recorded_values_on_the_examples(examples_dir, name, folder):
    """Each shipped model's probabilities on the shipped examples are the ones recorded when it was trained
    (None: the default model, steth/efficientat-asthma)."""
    expected = json.loads((Path(__file__).parent / "data" / f"{folder.replace('-', '_')}_expected.json").read_text())
    assert expected["model_sha256"] == _sha256(MODELS / folder / "model.safetensors"), \
        f"the model changed: regenerate tests/data/{folder.replace('-', '_')}_expected.json (configs/record_expected.py)"
    results, failures = screen_many(sorted(examples_dir.glob("*/*.wav")), model=name, progress=False)
    assert not failures
    got = {str(Path(r.source).relative_to(examples_dir)): r for r in results}
    assert set(got) == set(expected["probabilities"])
    for name, p in expected["probabilities"].items():
        assert got[name].probability == pytest.approx(p, abs=1e-4), name
        assert got[name].threshold == pytest.approx(expected["threshold"])


def test_cli_says_which_model_answered_and_how_good_it_was(examples_dir):
    from steth_hub.cli import main
    from steth_hub.evaluate import format_value

    meta = json.loads((EMBEDDED / "steth.json").read_text())
    auroc = format_value(meta["evaluation"]["model"]["levels"]["patient"]["auroc"])
    out = CliRunner().invoke(main, ["screen", "--quiet", *map(str, sorted(examples_dir.glob("kauh/*.wav")))])
    assert out.exit_code == 0, out.output
    assert f"Model: steth/efficientat-asthma, threshold {meta['threshold']:.3f}" in out.output
    assert f"patient-level AUROC {auroc}" in out.output and "MFCC baseline" in out.output
    kauh = format_value(meta["evaluation"]["model"]["subgroups"]["source=kauh"]["auroc"])
    assert f"within one source: kauh {kauh}" in out.output  # the pooled figure is not the whole story
    assert "low sample rate" not in out.output  # 4 kHz KAUH files hold all the 0-2 kHz this model reads


@pytest.mark.skipif(not (EMBEDDED / "steth.json").is_file(), reason="the embedded model is not trained yet")
def test_embedded_model_is_small_safetensors_with_its_facts():
    size = (EMBEDDED / "model.safetensors").stat().st_size
    assert size <= 25 * 1024 * 1024
    meta = json.loads((EMBEDDED / "steth.json").read_text())
    assert meta["plugin"] == "efficientat" and meta["preset"]["name"] == "excerpt-10s"
    assert meta["card_facts"]["mode"] == "finetune"  # a frozen copy of the third-party encoder never ships
    assert (EMBEDDED / "LICENSE-pretrained").read_text().startswith("MIT License")  # EfficientAT's notice kept
    assert (EMBEDDED / "model.onnx").is_file() and meta["onnx"]["frontend"]["name"] == "efficientat-mel"
    training = meta["training"]
    assert training["corpus"]["patients_by_label"]["asthma"] > 10 and training["epochs"] > 0
    assert "Youden" in training["threshold_from"] and meta["evaluation"]["n_folds"] == 5


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_footer_never_quotes_a_smoke_run_or_a_broken_report():
    from steth_hub.commands.screen import _evaluation_sentence

    auroc = {"value": 0.74, "low": 0.63, "high": 0.84}
    good = {"model": {"levels": {"patient": {"auroc": auroc}},
                      "subgroups": {"source=kauh": {"auroc": {"value": 0.6, "low": 0.46, "high": 0.74}},
                                    "source=icbhi": {"auroc": {"value": None}}, "source=odd": {"auroc": "?"}}},
            "baseline": {"levels": {"patient": None}}}
    text = _evaluation_sentence(good)
    assert text.startswith("Cross-validated patient-level AUROC 0.74 [0.63, 0.84]; within one source: kauh 0.60")
    assert "MFCC baseline" not in text and "icbhi" not in text and "odd" not in text
    assert "accuracy is unknown" in _evaluation_sentence(dict(good, quick=True))
    assert "quick smoke run" in _evaluation_sentence(dict(good, quick=True))
    for broken in (None, {}, {"model": None}, {"model": {"levels": {"patient": {"auroc": {"value": None}}}}}):
        assert _evaluation_sentence(broken) == "This model carries no evaluation: its accuracy is unknown."


def test_short_recording_messages_fit_the_model(tiny_model, example_wavs, tmp_path):
    """Never 'lasts 6.00 s; needs 6 s' (rounded up), and no 'ideally 10 s' where a model needs more."""
    import copy

    model, _ = tiny_model
    x, rate = _real(example_wavs)
    almost = _write(tmp_path / "almost.wav", x[: int(5.996 * rate)], rate)
    with pytest.raises(RecordingRejected) as info:
        screen(almost, model=model)
    assert "lasts 5.99 s; this model needs at least 6 s" in info.value.message

    long_clips = copy.copy(model)
    long_clips.preset = copy.deepcopy(model.preset)
    for step in long_clips.preset["steps"]:
        if "trim" in step:
            step["trim"]["seconds"] = 2.0
        if "cut" in step:
            step["cut"]["seconds"] = 8.0
    long_clips.preset.pop("clip_seconds", None)  # derived from the steps
    with pytest.raises(RecordingRejected) as info:
        screen(example_wavs[0], model=long_clips)  # a 10 s excerpt: 2 + 8 + 2 s are needed
    assert "needs at least 12 s" in info.value.message and info.value.fix == "record at least 12 s"

