"""The demo's logic without a server: real recordings, the real screening code, a model trained here.

What a visitor sees for a recording must be what ``steth_hub.screen`` says about it; bad input
must give a message that names the file and the fix (never a trace); patient facts must not
change the result; the page must import nothing heavy until it is built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from steth_hub import demo
from steth_hub.errors import ConfigError
from steth_hub.explanation import decision_numbers
from test_demo_support import ASTHMA_WAV, EXAMPLES, NORMAL_WAV, REPO, tiled_wav, train_tiny_model

HEAVY = ("gradio", "torch", "transformers", "datasets", "timm", "sklearn", "librosa", "matplotlib")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("demo-model") / "tiny-mfcc")


@pytest.fixture(scope="module")
def catalog(tiny_dir):
    return demo.ModelCatalog({"tiny": str(tiny_dir), "missing": str(tiny_dir.parent / "no-such-model")})


@pytest.fixture
def screener(catalog):
    return demo.Screener(catalog, demo.DemoSettings(max_seconds=15, max_bytes=150_000))


def test_importing_the_demo_and_its_command_imports_nothing_heavy():
    code = ("import sys, steth_hub.demo, steth_hub.commands.demo; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert "GRADIO_ANALYTICS_ENABLED" in demo.__doc__ and demo.os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_screening_in_the_demo_runs_on_the_light_runtime_without_torch():
    """The Space's app (spaces/app.py: the page of ``steth demo``, the embedded default with its ONNX
    export): a visitor's recording is screened and its spectrogram drawn without importing torch."""
    code = ("import runpy, sys\nfrom steth_hub.runtime import OnnxClassifier\n"
            f"app = runpy.run_path({str(REPO / 'spaces' / 'app.py')!r}, run_name='space')['demo']\n"
            "summary, warnings, spectrogram, explanation, record = app.steth_screener(sys.argv[1], None)\n"
            "model = app.steth_screener.catalog.get(None)\n"
            "print('RESULT', record.get('probability'), record['explanation'].get('note'), spectrogram.shape, "
            "explanation, isinstance(model, OnnxClassifier))\n"
            "print('HEAVY', [m for m in ('torch', 'transformers', 'datasets', 'timm') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code, str(ASTHMA_WAV)], capture_output=True, text=True,
                          env={**os.environ, "STETH_RUNTIME": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HEAVY []" in done.stdout, done.stdout
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    assert "RESULT 0." in result and "not asked for" in result and "None True" in result, result


@pytest.mark.usefixtures("one_torch_thread")
def test_a_demo_request_preprocesses_once_and_the_map_reuses_its_clips(monkeypatch):
    """Screening and explaining one upload: one decoding, one preprocessing, one forward pass (the
    light runtime's), and one of each per stability check the model asks for; the explainer gets the
    clips screening computed, never a second screening."""
    import steth_hub.audio
    from steth_hub.hub import DEFAULT_MODEL
    from steth_hub.preprocess import Preprocessor
    from steth_hub.runtime import OnnxClassifier

    catalog = demo.ModelCatalog([DEFAULT_MODEL])
    if catalog.entries[DEFAULT_MODEL].error is not None or not isinstance(catalog.get(None), OnnxClassifier):
        pytest.skip("the embedded default model or its ONNX export is not in this checkout")
    heavy = catalog.explainable(None)  # the torch form, loaded before counting starts
    calls = {"decode": 0, "preprocess": 0, "onnx": 0, "torch": 0, "explain": 0}

    def count(owner, method, key):
        original = getattr(owner, method)

        def counting(*args, **kwargs):
            calls[key] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, method, counting)

    count(steth_hub.audio, "decode", "decode")
    count(Preprocessor, "run", "preprocess")
    count(OnnxClassifier, "predict_proba", "onnx")
    count(type(heavy), "predict_proba", "torch")
    import steth_hub.explanation as explanation

    count(explanation, "_run_explainer", "explain")
    screener = demo.Screener(catalog, demo.DemoSettings())
    summary, _, spectrogram, picture, record = screener(str(ASTHMA_WAV), None, explain=True)
    from steth_hub.screening import ScreeningPipeline

    checks = len(ScreeningPipeline(catalog.get(None)).stability_checks)
    assert checks == 2  # the embedded default asks for them (noise 60 and 40 dB below the recording)
    assert calls == {"decode": 1, "preprocess": 1 + checks, "onnx": 1 + checks, "torch": 0, "explain": 1}, calls
    assert record["explanation"]["explainer"] == "gradcam" and picture is not None and spectrogram is not None
    assert "drawn by the gradcam explainer" in summary and record["n_clips"] == 3
    from steth_hub.screening import screen

    expected = screen(ASTHMA_WAV, model=catalog.get(None))
    assert record["probability"] == pytest.approx(expected.probability, abs=1e-12)
    assert record["decision"] == expected.decision


def test_a_real_recording_gets_the_screening_result_of_steth_hub_screen(screener, tiny_dir):
    from steth_hub.screening import screen

    summary, warnings, spectrogram, explanation, record = screener(str(ASTHMA_WAV), "tiny", "M", 38, "P R M")
    expected = screen(ASTHMA_WAV, model=str(tiny_dir))
    assert record["probability"] == pytest.approx(expected.probability, abs=1e-9)
    assert record["decision"] == expected.decision and record["n_clips"] == expected.n_clips == 3
    assert record["threshold"] == pytest.approx(expected.threshold)
    assert record["source"] == ASTHMA_WAV.name and record["selected_model"] == {"name": "tiny", "plugin": "mfcc-logreg"}
    shown_p, shown_t = decision_numbers(expected.probability, expected.threshold)
    assert f"P(asthma) = {shown_p}" in summary
    assert f"threshold {shown_t}" in summary and len(shown_t.split(".")[1]) >= 3
    assert ("screen positive" if expected.decision else "screen negative") in summary
    assert "not a diagnosis" in summary.lower()
    # a 4 kHz recording holds all the 0-2 kHz this model reads: no quality warning
    assert record["warnings"] == [] and warnings == "**Quality:** no warnings."
    # three stacked panels drawn as an RGB picture; the map is drawn only when asked for
    assert spectrogram.ndim == 3 and spectrogram.shape[2] == 3 and spectrogram.shape[0] > 400
    assert spectrogram.std() > 10  # a drawn picture, not a blank canvas
    assert explanation is None and "not asked for" in record["explanation"]["note"]
    assert 'Explanation map:** not shown: not asked for (tick "Show where the model looked"' in summary
    json.dumps(record)  # the JSON output is plain JSON
    # asked for: no explainer supports mfcc-logreg, and the page and the JSON say so
    summary, _, _, explanation, record = screener(str(ASTHMA_WAV), "tiny", explain=True)
    assert explanation is None and "no explainer" in record["explanation"]["note"]
    assert "Explanation map:** not shown: no explainer is installed for the mfcc-logreg classifier" in summary
    assert record["probability"] == pytest.approx(expected.probability, abs=1e-9)


def test_the_summary_shows_the_threshold_with_3_decimals_and_a_close_p_with_3():
    from types import SimpleNamespace

    result = SimpleNamespace(probability=0.495, threshold=0.49715, decision=False, n_clips=3)
    recording = SimpleNamespace(duration=10.0, original_sample_rate=4000)
    record = {"selected_model": {"name": "tiny", "plugin": "mfcc-logreg"}, "explanation": {}}
    summary = demo._summary(result, recording, "x.wav", record, demo.PatientFacts())
    assert "P(asthma) = 0.495, negative" in summary and "**P(asthma):** 0.495" in summary
    assert "below the model's threshold 0.497)" in summary and "0.50" not in summary
    result = SimpleNamespace(probability=0.81234, threshold=0.49715, decision=True, n_clips=3)
    summary = demo._summary(result, recording, "x.wav", record, demo.PatientFacts())
    assert "P(asthma) = 0.81, positive" in summary and "at or above the model's threshold 0.497)" in summary


def make_tiny_ast():
    """A tiny, randomly initialised AST built with the registered ``ast`` plugin, with the default preset."""
    torch = pytest.importorskip("torch")
    from transformers import ASTConfig, ASTForAudioClassification

    from steth_hub.preprocess import load_preset
    from steth_hub.registry import get_registry

    torch.manual_seed(0)
    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       patch_size=16, frequency_stride=16, time_stride=16, max_length=500, num_mel_bins=128,
                       num_labels=2, id2label={0: "not_asthma", 1: "asthma"}, label2id={"not_asthma": 0, "asthma": 1})
    cls = get_registry().get("classifier", "ast").load()
    return cls(model_config=config.to_dict(), net=ASTForAudioClassification(config).eval(), mean=-6.5, std=4.2,
               sample_rate=16000, threshold=0.5, preset=load_preset().to_dict())


@pytest.mark.slow
def test_the_explainer_map_is_shown_when_an_explainer_supports_the_model():
    from steth_hub.explanation import explain
    from steth_hub.registry import get_registry

    if "integrated-gradients" not in get_registry().names("explainer"):
        pytest.skip("the integrated-gradients explainer (the default for AST) is not installed")
    model = make_tiny_ast()
    screener = demo.Screener(demo.ModelCatalog({"tiny-ast": model}), demo.DemoSettings())
    summary, _, spectrogram, picture, record = screener(str(ASTHMA_WAV), "tiny-ast", explain=True)
    expected = explain(ASTHMA_WAV, model=model)
    assert record["explanation"]["explainer"] == expected.explainer == "integrated-gradients"
    assert record["explanation"]["peak"] == expected.summary()["peak"]
    assert record["probability"] == pytest.approx(expected.probability)
    assert f"drawn by the {expected.explainer} explainer" in summary
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.std() > 10
    assert picture.shape[0] > 300 and picture.shape[1] > 600  # the explainer's full picture, not a thumbnail


def test_the_page_tells_an_asthma_recording_from_a_normal_one(screener):
    asthma = screener(str(ASTHMA_WAV), "tiny")[4]
    normal = screener(str(NORMAL_WAV), "tiny")[4]
    assert asthma["decision"] is True and normal["decision"] is False
    assert asthma["probability"] > normal["probability"]


def test_patient_facts_are_shown_and_saved_but_never_change_the_result(screener):
    bare = screener(str(NORMAL_WAV), "tiny")
    told = screener(str(NORMAL_WAV), "tiny", "f", 71, "  P   L  L ")
    assert told[4]["probability"] == bare[4]["probability"]
    assert told[4]["patient"] == {"sex": "F", "age": 71.0, "site": "P L L", "model_input": False}
    assert bare[4]["patient"] == {"sex": None, "age": None, "site": None, "model_input": False}
    assert "female, 71 years, P L L" in told[0] and "not given" in bare[0]
    odd = demo.PatientFacts.from_inputs("Male", float("nan"), None)
    assert (odd.sex, odd.age, odd.site) == ("M", None, None)
    assert demo.PatientFacts.from_inputs("x", 200, "").to_dict()["age"] is None


def test_user_text_cannot_inject_markup_into_the_page(screener):
    summary = screener(str(NORMAL_WAV), "tiny", "", None, "<img src=x onerror=alert(1)> | **x**")[0]
    assert "<img" not in summary and "\\*\\*x\\*\\*" in summary and "\\|" in summary


def _assert_message(outputs, code, *needles):
    summary, warnings, spectrogram, explanation, record = outputs
    assert record["error"]["code"] == code, record
    assert spectrogram is None and explanation is None
    assert "Traceback" not in summary and "File \"" not in summary
    assert "What to do:" in summary and record["error"]["fix"]
    for needle in needles:
        assert needle in summary, summary
    return record["error"]


def test_bad_uploads_get_a_message_not_a_trace(screener, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    error = _assert_message(screener(str(corrupt), "tiny"), "corrupt", "corrupt.wav", "cannot decode")
    assert error["file"] == "corrupt.wav" and str(tmp_path) not in json.dumps(error)  # no server paths

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _assert_message(screener(str(empty), "tiny"), "empty", "empty.wav")

    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(4000 * 10, dtype=np.int16), 4000, subtype="PCM_16")
    _assert_message(screener(str(silent), "tiny"), "silent", "silent")

    short = tmp_path / "short.wav"
    tiled_wav(ASTHMA_WAV, short, 2.0)  # shorter than one 5 s clip
    error = _assert_message(screener(str(short), "tiny"), "too-short", "short.wav")
    assert "this model needs at least 6 s" in error["message"] and error["fix"].startswith("record at least 6 s")


def test_limits_refuse_long_and_large_uploads_before_decoding(screener, tmp_path, monkeypatch):
    long = tiled_wav(ASTHMA_WAV, tmp_path / "long.wav", 16.0)  # 128 kB: under the size limit, over 15 s
    large = tiled_wav(ASTHMA_WAV, tmp_path / "large.wav", 25.0)  # 200 kB: over the 150 kB limit
    decoded = []

    def no_decoding(*args, **kwargs):
        decoded.append(args)
        raise AssertionError("samples were read")

    monkeypatch.setattr("soundfile.read", no_decoding)  # both are refused before any sample is read
    _assert_message(screener(str(long), "tiny"), "too-long", "16 s", "15 s")
    error = _assert_message(screener(str(large), "tiny"), "too-large", "large.wav")
    assert "0.191 MiB" in error["message"] and "0.143 MiB" in error["message"]
    assert not decoded


def test_a_truncated_recording_is_screened_with_a_warning(screener, tmp_path):
    cut = tmp_path / "cut.wav"
    data = ASTHMA_WAV.read_bytes()
    cut.write_bytes(data[:int(len(data) * 0.8)])  # 8 of 10 s: the header still promises 10 s
    summary, warnings, _, _, record = screener(str(cut), "tiny")
    assert "error" not in record and "truncated" in warnings
    assert any("truncated" in w for w in record["warnings"])


def test_models_are_listed_with_their_plugin_and_loaded_once(catalog, screener, tiny_dir):
    assert catalog.choices() == [("tiny (mfcc-logreg)", "tiny"), ("missing (unavailable)", "missing")]
    assert catalog.default == "tiny"
    assert catalog.get("tiny") is catalog.get("tiny") is catalog.get(None)
    error = _assert_message(screener(str(ASTHMA_WAV), "missing"), "model", "missing")
    assert "not available" in error["message"]
    error = _assert_message(screener(str(ASTHMA_WAV), "other"), "model", "other")
    assert "tiny" in error["fix"]
    # a folder is listed by its own name, so the page does not show the server's paths
    by_path = demo.ModelCatalog([str(tiny_dir)])
    assert by_path.choices() == [("tiny-mfcc (mfcc-logreg)", "tiny-mfcc")]


def test_the_default_model_is_offered_first_or_said_to_be_unavailable():
    catalog = demo.ModelCatalog()
    (label, name), = catalog.choices()
    assert name == "steth/efficientat-asthma"
    entry = catalog.entries[name]
    if entry.error is None:
        assert label == f"steth/efficientat-asthma ({entry.plugin}, embedded default)"
    else:  # the embedded model is not in this checkout yet: listed, with the reason kept
        assert label == "steth/efficientat-asthma (unavailable)" and entry.error.fix


def test_warm_up_loads_the_default_model_before_the_first_visitor(tiny_dir, monkeypatch):
    catalog = demo.ModelCatalog({"tiny": str(tiny_dir)})
    screened = []
    analyse = demo.Screener.analyse
    monkeypatch.setattr(demo.Screener, "analyse", lambda self, *a: screened.append(a[:2]) or analyse(self, *a))
    seconds = demo.Screener(catalog, demo.DemoSettings()).warm_up()
    assert seconds is not None and seconds > 0 and "tiny" in catalog._loaded
    (path, model), = screened
    assert model == "tiny" and path.startswith(str(EXAMPLES)) and path.endswith(".wav")
    broken = demo.ModelCatalog({"gone": str(tiny_dir.parent / "gone")})
    assert demo.Screener(broken, demo.DemoSettings()).warm_up() is None  # logged, never raised


def test_no_recording_yet_gets_a_prompt(screener):
    summary, *_, record = screener(None, "tiny")
    assert record["error"]["code"] == "no-audio" and "upload" in summary


def test_example_rows_cover_the_shipped_recordings_with_their_facts():
    rows = demo.example_rows()
    assert sorted(row[1] for row in rows) == sorted(str(p) for p in EXAMPLES.glob("*/*.wav"))
    by_name = {row[1].rsplit("/", 1)[-1]: row for row in rows}
    label, _, sex, age, site = by_name[ASTHMA_WAV.name]
    assert (sex, age, site) == ("M", 38.0, "P R M") and label.startswith("KAUH: asthma")
    assert by_name["112_1b1_Ar_sc_Meditron_middle10sec.wav"][0].startswith("ICBHI: copd")
    assert all("E W" not in row[0] for row in rows)  # the clinician's sound-type finding is not shown as a fact


def test_settings_come_from_the_environment_with_clear_errors():
    env = {"STETH_DEMO_MODELS": "a/b, ./folder ,", "STETH_DEMO_MAX_SECONDS": "30", "STETH_DEMO_MAX_MB": "1.5",
           "STETH_DEMO_CONCURRENCY": "2"}
    assert demo.settings_from_env(env) == {"models": ["a/b", "./folder"], "max_seconds": 30.0,
                                           "max_bytes": int(1.5 * 2**20), "concurrency": 2}
    assert demo.settings_from_env({}) == {}
    with pytest.raises(ConfigError, match="STETH_DEMO_MAX_MB='lots'"):
        demo.settings_from_env({"STETH_DEMO_MAX_MB": "lots"})
    with pytest.raises(ConfigError, match="max_seconds must be positive"):
        demo.DemoSettings(max_seconds=0)


def test_steth_demo_help_lists_its_options():
    from steth_hub.cli import main

    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--model", "--max-seconds", "--max-mb", "--share / --no-share"):
        assert option in result.output
    assert "127.0.0.1" in result.output and "not a diagnosis" in result.output


def test_quality_warnings_are_shown_and_kept_in_the_json(screener):
    """The clipped ICBHI example is screened, with its clipping warning in the page and the JSON."""
    from test_demo_support import EXAMPLES

    summary, warnings, _, _, record = screener(str(EXAMPLES / "icbhi" / "112_1b1_Ar_sc_Meditron_middle10sec.wav"),
                                               "tiny")
    assert any("clipped" in w and "unreliable" in w for w in record["warnings"]), record["warnings"]
    assert warnings.startswith("**Quality warnings:**") and "clipped" in warnings

