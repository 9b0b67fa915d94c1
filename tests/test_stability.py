"""Stability checks: screening re-screens a recording under harmless changes and warns when the decision moves."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from steth_hub.errors import ModelError
from steth_hub.stability import DEFAULT_CHECKS, check_list, perturb


class QuietnessModel:
    """A model built for the test with the shortcut the first default model learnt: P(asthma) rises the
    quieter a clip's quietest samples are against its RMS. Noise fills the quiet samples in (P falls);
    a gain leaves the ratio as it is."""

    plugin_name = "quietness"

    def __init__(self, threshold: float = 0.5, checks=None):
        from steth_hub.preprocess import load_preset

        preset = load_preset("excerpt-10s")
        self.preset, self.sample_rate, self.threshold = preset.to_dict(), int(preset.sample_rate), float(threshold)
        self.metadata = {"name": "test/quietness"}
        if checks is not None:
            self.metadata["stability_checks"] = checks

    def predict_proba(self, waveforms) -> np.ndarray:
        w = np.abs(np.asarray(waveforms, dtype=np.float64))
        rms = np.sqrt(np.mean(w ** 2, axis=1))
        return 1.0 - np.percentile(w, 10, axis=1) / rms


@pytest.fixture(scope="module")
def kauh_file(example_wavs):
    """A quiet KAUH recording that no +6 dB gain clips, so only the noise checks can move the test model."""
    return next(p for p in example_wavs if p.name.startswith("DP72_"))


def test_check_lists_are_validated():
    assert check_list([["noise", 60], ["gain", -6]]) == (("noise", 60.0), ("gain", -6.0))
    assert check_list([list(c) for c in DEFAULT_CHECKS]) == DEFAULT_CHECKS
    for bad in ("noise", [["noise", 5]], [["gain", 0]], [["bits", 8]], [["noise", float("nan")]], [["noise"]],
                [["gain", True]]):
        with pytest.raises(ModelError, match="stability"):
            check_list(bad)


def test_a_model_folder_with_bad_stability_checks_is_refused_on_load(tmp_path):
    from steth_hub.hub import EMBEDDED
    from steth_hub.model_folder import read_metadata

    folder = tmp_path / "model"
    shutil.copytree(EMBEDDED["steth/efficientat-asthma"], folder)
    meta = json.loads((folder / "steth.json").read_text())
    assert meta["stability_checks"] == [list(c) for c in DEFAULT_CHECKS]  # the embedded default asks for them
    meta["stability_checks"] = [["noise", "loud"]]
    (folder / "steth.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="'stability_checks' is") as info:
        read_metadata(folder)
    assert "steth.json" in str(info.value) and "noise" in info.value.fix


def screen(path, model, stability=None):
    """What steth_hub.screen does, with a model object that is not a saved classifier."""
    from steth_hub.screening import ScreeningPipeline, screen_loaded

    return screen_loaded(path, model, ScreeningPipeline(model, stability))


def test_noise_flips_a_decision_at_its_edge_and_screening_says_so(kauh_file):

    clean = screen(kauh_file, model=QuietnessModel(checks=[]))  # no checks: nothing said
    assert clean.stable is None and not any(w.startswith("unstable") for w in clean.warnings)
    # just below the clean P(asthma): noise 40 dB below the recording fills its quiet samples in enough to
    # cross it (P falls by about 5e-4), noise 60 dB below does not (about 3e-5)
    edge = QuietnessModel(threshold=clean.probability - 1e-4, checks=[list(c) for c in DEFAULT_CHECKS])
    result = screen(kauh_file, model=edge)
    assert result.decision and result.probability == pytest.approx(clean.probability)  # the decision itself stands
    assert result.stable is False
    (warning,) = [w for w in result.warnings if w.startswith("unstable")]
    assert "white noise 40 dB below the recording" in warning and "not_asthma" in warning
    assert "1 of 2 harmless changes" in warning and "indeterminate" in warning
    assert screen(kauh_file, model=edge).warnings == result.warnings  # the checks' noise is seeded by the recording
    assert result.to_dict()["stable"] is False

    far = QuietnessModel(threshold=0.01, checks=[list(c) for c in DEFAULT_CHECKS])
    steady = screen(kauh_file, model=far)
    assert steady.stable is True and not any(w.startswith("unstable") for w in steady.warnings)
    assert screen(kauh_file, model=edge, stability=False).stable is None  # --no-stability
    assert screen(kauh_file, model=QuietnessModel(threshold=clean.probability - 1e-4), stability=True).stable is False


def test_a_raised_gain_that_clips_is_a_damaged_copy_not_a_harmless_change(example_wavs):
    """The embedded presets normalise every clip, so a level change moves nothing unless it clips; a copy
    that clips where the original did not is skipped (the +6 dB check was measuring clipping)."""
    loud = next(p for p in example_wavs if p.name.startswith("BP64_"))
    from steth_hub.audio import decode

    peak = float(np.abs(decode(loud).samples).max())
    assert peak * 10 ** (12 / 20) > 1.0  # +12 dB clips this recording
    model = QuietnessModel(threshold=0.0, checks=[["gain", 12.0], ["gain", -6.0]])
    result = screen(loud, model)
    assert result.stable is True  # only the -6 dB copy was screened, and it moved nothing
    lower = QuietnessModel(threshold=0.0, checks=[["gain", 12.0]])
    assert screen(loud, lower).stable is None  # no check could be run: nothing is claimed


def test_a_check_the_preprocessing_refuses_is_skipped_not_counted(kauh_file):
    from steth_hub.audio import decode
    from steth_hub.stability import check_stability

    recording = decode(kauh_file)
    seen = []

    def probability_of(copy):
        seen.append(float(np.sqrt(np.mean(copy.samples.astype(np.float64) ** 2))))
        return None if len(seen) == 1 else 0.9  # the first change is refused (a raised gain that clips, say)

    report = check_stability(recording, 0.4, 0.5, probability_of, (("gain", 6.0), ("noise", 40.0)))
    assert len(seen) == 2 and len(report["checked"]) == 1 and report["stable"] is False
    assert seen[0] == pytest.approx(2 * np.sqrt(np.mean(recording.samples.astype(np.float64) ** 2)), rel=0.02)


def test_the_embedded_default_checks_its_decisions_in_both_runtimes(example_wavs):
    """The shipped default asks for the checks; the light (ONNX) and torch runtimes agree on them."""
    pytest.importorskip("onnxruntime")
    from steth_hub.screening import load_model, screen_many

    light, _ = screen_many(example_wavs, model=load_model(None, runtime="onnx"), progress=False)
    torch_results, _ = screen_many(example_wavs, model=load_model(None, runtime="torch"), progress=False)
    assert all(r.stable is not None for r in light)
    assert [r.stable for r in light] == [r.stable for r in torch_results]
    # it learnt quietness (its card says so): on the shipped examples, some decisions do not survive 40 dB noise
    assert any(r.stable is False for r in light)


def test_perturb_changes_what_it_says(kauh_file):
    from steth_hub.audio import decode

    x = decode(kauh_file).samples
    noisy = perturb(x, 4000, "noise", 40.0, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((noisy - x).astype(np.float64) ** 2))
    assert snr == pytest.approx(40.0, abs=0.3)
    with pytest.raises(ValueError, match="unknown change"):
        perturb(x, 4000, "reverse", 1, None)


def test_the_one_page_report_shows_an_unstable_warning_in_a_few_words():
    from steth_hub.stability import short_warning, unstable_warning

    report = {"stable": False, "checked": [{}, {}, {}, {}],
              "changed": [{"change": "white noise 60 dB below the recording", "probability": 0.004,
                           "decision": False}]}
    whole = unstable_warning(0.94, 0.354, report)
    assert whole.startswith("unstable: white noise 60 dB below the recording moves P(asthma) to 0.004 (not_asthma)")
    assert "1 of 4 harmless changes cross the threshold 0.354" in whole  # four checked in this report
    assert short_warning(whole) == "unstable: white noise 60 dB below the recording moves P(asthma) to 0.004; indeterminate"
    assert short_warning("clipped: 3% of samples") == "clipped: 3% of samples"
    assert unstable_warning(0.94, 0.354, {"stable": True, "checked": [{}], "changed": []}) is None


def test_the_patient_result_and_the_demo_say_when_an_unstable_recording_drives_them(example_wavs):
    from types import SimpleNamespace

    from click.testing import CliRunner

    from steth_hub.cli import main
    from steth_hub.demo.screener import _decision_text

    fragile = next(p for p in example_wavs if p.name.startswith("BP64_"))  # the default flags it (docs/bad-inputs.md)
    out = CliRunner().invoke(main, ["screen", "--patient", "P1", str(fragile), "--quiet",
                                    "--model", "steth/efficientat-asthma"])
    assert out.exit_code == 0, out.output
    assert "CAUTION: R1 drive(s) this result but did not survive harmless changes" in out.output
    quiet = CliRunner().invoke(main, ["screen", "--patient", "P1", str(fragile), "--quiet", "--no-stability",
                                      "--model", "steth/efficientat-asthma"])
    assert quiet.exit_code == 0 and "CAUTION" not in quiet.output
    assert "unstable" in _decision_text(SimpleNamespace(decision=True, stable=False))
    assert "unstable" not in _decision_text(SimpleNamespace(decision=True, stable=None))


def test_a_config_asks_for_the_checks_and_steth_train_writes_them(tmp_path, example_clipset):
    from pathlib import Path

    from steth_hub.errors import ConfigError
    from steth_hub.experiment import load_experiment, train_on_clips

    configs = Path(__file__).resolve().parents[1] / "configs"
    shipped = load_experiment(configs / "efficientat-asthma.yaml")
    assert shipped.stability_checks == [list(c) for c in DEFAULT_CHECKS]  # as the shipped default's steth.json
    assert load_experiment(configs / "mfcc-logreg.yaml").stability_checks is None
    with pytest.raises(ConfigError, match="stability_checks") as info:
        load_experiment({"classifier": "mfcc-logreg", "stability_checks": [["noise", 3]]})
    assert "noise" in info.value.fix

    config = {"name": "m", "classifier": "mfcc-logreg", "recipe": {}, "stability_checks": [["noise", 50]]}
    train_on_clips(config, example_clipset, tmp_path / "m", valid_fraction=0.0, progress=False)
    saved = json.loads((tmp_path / "m" / "steth.json").read_text())
    assert saved["stability_checks"] == [["noise", 50.0]]
