"""The explanation API, placing maps on the display grid, the picture, the explainers and ``steth explain``.

Models are tiny, built in the test with random weights and normalised on a real recording;
the recordings are the shipped examples. What the maps *mean* is tested in
tests/test_explain_planted.py (a planted tone, randomised weights).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from steth_hub.audio import decode
from steth_hub.errors import ConfigError, PluginError, UnknownPluginError
from steth_hub.explanation import ClipMaps, display_spectrogram, interp_matrix, mel_centres, place_maps

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread (conftest.py)

EXAMPLES = Path(__file__).resolve().parents[1] / "steth_hub" / "examples"
ASTHMA = EXAMPLES / "kauh" / "EP38_Asthma,E W,P R M,38,M_middle10sec.wav"
DENSENET = {"architecture": "densenet121", "model_kwargs": {"growth_rate": 8, "block_config": [1, 1, 1, 1]}}


# --------------------------------------------------------------------------- tiny models


def _normalised_on_example(model):
    """Build the network and its normalisation from the example's clips (default preset)."""
    from steth_hub.preprocess import Preprocessor

    clips = Preprocessor(None).run(decode(ASTHMA), "example")
    model.fit_normalisation(model.featurise(np.stack([c.samples for c in clips]), clips[0].sample_rate))
    return model


@pytest.fixture(scope="module")
def tiny_ast_dir(tmp_path_factory) -> Path:
    """A tiny AST (random weights) saved as a model folder, as from_pretrained reads it."""
    from steth_hub.registry import get_registry

    model = _normalised_on_example(get_registry().get("classifier", "ast").load().from_config({"size": "tiny"}))
    folder = tmp_path_factory.mktemp("models") / "tiny-ast"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_densenet(tmp_path_factory):
    import torch

    from steth_hub.registry import get_registry

    torch.manual_seed(0)  # Grad-CAM of an untrained net can be all zero (a ReLU of a negative sum): fix the draw
    return _normalised_on_example(get_registry().get("classifier", "densenet201").load().from_config(DENSENET))


@pytest.fixture(scope="module")
def tiny_ast(tiny_ast_dir):
    from steth_hub.hub import from_pretrained

    return from_pretrained(tiny_ast_dir)


@pytest.fixture(scope="module")
def explanation(tiny_ast_dir):
    from steth_hub.explanation import explain

    return explain(ASTHMA, model=tiny_ast_dir)


# --------------------------------------------------------------------------- grids and placing
def test_clip_maps_check_their_shape_and_axes():
    ok = ClipMaps(np.ones((2, 3, 4)), [100, 200, 300], [0.0, 0.1, 0.2, 0.3])
    assert ok.maps.dtype == np.float32 and len(ok) == 2
    assert ClipMaps(-np.ones((1, 1, 2)), [1.0], [0.0, 1.0]).maps.max() == 0  # negatives clipped
    with pytest.raises(PluginError, match="do not match"):
        ClipMaps(np.ones((2, 3, 4)), [100, 200], [0.0, 0.1, 0.2, 0.3])
    with pytest.raises(PluginError, match="increasing"):
        ClipMaps(np.ones((1, 2, 2)), [200, 100], [0.0, 0.1])
    with pytest.raises(PluginError, match="clips, frequencies, times"):
        ClipMaps(np.ones((3, 4)), [1, 2, 3], [0, 1, 2, 3])


def test_interp_matrix_interpolates_linearly_and_holds_the_edges():
    old = np.array([0.0, 1.0, 3.0])
    w = interp_matrix(np.array([-1.0, 0.5, 2.0, 5.0]), old)
    assert np.allclose(w @ np.array([10.0, 20.0, 40.0]), [10.0, 15.0, 30.0, 40.0])
    assert np.allclose(w.sum(axis=1), 1.0)


def test_mel_centres_match_the_ast_front_end_filterbank():
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(num_frequency_bins=1025, num_mel_filters=128, min_frequency=20, max_frequency=8000,
                           sampling_rate=16000, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    peaks = np.argmax(bank, axis=0) * 8000 / 1024  # where each triangle peaks, in Hz
    centres = mel_centres(128, 20, 8000, "kaldi")
    assert np.all(np.abs(peaks - centres) <= 8000 / 1024 + 1e-6)


def _display_grid(seconds=10.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return display_spectrogram(0.1 * np.sin(2 * np.pi * 440 * t).astype(np.float32), rate)


def test_display_spectrogram_has_the_axes_of_the_picture():
    db, freqs, times = _display_grid()
    assert db.shape == (128, len(times)) and len(freqs) == 128
    assert np.allclose(np.diff(times), 0.01) and times[0] == 0 and abs(times[-1] - 10.0) < 0.011
    assert np.all(np.diff(freqs) > 0) and 0 < freqs[0] < 50 and 7800 < freqs[-1] < 8000
    row = int(np.argmax(db[:, len(times) // 2]))  # the 440 Hz tone
    assert abs(freqs[row] - 440) < 40


def test_place_maps_puts_a_cell_at_its_time_and_frequency():
    _, freqs, times = _display_grid()
    clip_freqs = mel_centres(128, 20, 8000, "kaldi")  # an AST-like input grid
    clip_times = (np.arange(500) * 160 + 200) / 16000.0
    maps = np.zeros((2, 128, 500), np.float32)
    f, t = int(np.argmin(abs(clip_freqs - 1000))), int(np.argmin(abs(clip_times - 1.0)))
    maps[1, f, t] = 1.0  # second clip, 1 s in, 1 kHz
    placed, coverage = place_maps(ClipMaps(maps, clip_freqs, clip_times), [0.0, 2.5], 5.0, times, freqs)
    row, col = np.unravel_index(np.argmax(placed), placed.shape)
    assert abs(times[col] - 3.5) <= 0.011
    assert abs(freqs[row] - 1000) < 0.05 * 1000
    assert placed.max() == pytest.approx(1.0)
    assert coverage[times < 2.5].max() == 1 and coverage[(times > 2.6) & (times < 4.9)].min() == 2
    assert coverage[times > 7.6].max() == 0 and placed[:, times > 7.6].max() == 0


def test_place_maps_averages_overlaps_and_ignores_padding():
    _, freqs, times = _display_grid()
    clip_times = np.arange(0, 6.0, 0.1) + 0.05  # 6 s of columns for 5 s clips: the last second is padding
    first = np.ones((4, len(clip_times)))
    second = np.where(clip_times < 2.5, 1.0, 0.0)[None, :].repeat(4, axis=0)
    second[:, clip_times > 5.0] = 1.0  # padding: must not show
    maps = ClipMaps(np.stack([first, second]), [100.0, 1000.0, 3000.0, 7000.0], clip_times)
    placed, coverage = place_maps(maps, [0.0, 3.0], [5.0, 5.0], times, freqs)
    col = lambda s: int(np.argmin(abs(times - s)))  # noqa: E731
    assert placed[:, col(1.0)].min() == pytest.approx(1.0)        # first clip only
    assert placed[:, col(4.0)].min() == pytest.approx(1.0)        # both: 1 and 1
    assert placed[:, col(7.0)].max() == pytest.approx(0.0)        # second clip's zeros
    assert coverage[col(4.0)] == 2 and coverage[col(7.0)] == 1
    assert coverage[col(8.5)] == 0 and placed[:, col(8.5)].max() == 0  # past the clip: padding ignored


# --------------------------------------------------------------------------- choosing explainers
def test_each_classifier_gets_a_default_explainer_and_bad_choices_say_why(tiny_ast, tiny_densenet):
    from steth_hub.explanation import explainers_for, load_explainer

    assert load_explainer(tiny_ast)[0] == "integrated-gradients"
    assert load_explainer(tiny_densenet)[0] == "gradcam"
    assert set(explainers_for("ast")) == {"integrated-gradients", "attention"}
    assert load_explainer(tiny_ast, "attention")[0] == "attention"
    with pytest.raises(PluginError, match="supports classifiers with input_grid\\(\\) and gradcam_layer\\(\\), not the 'ast'"):
        load_explainer(tiny_ast, "gradcam")
    with pytest.raises(UnknownPluginError, match="did you mean 'gradcam'"):
        load_explainer(tiny_ast, "gradcamm")

    class Other:
        plugin_name = "mfcc-logreg"

    with pytest.raises(PluginError, match="no installed explainer supports the 'mfcc-logreg'"):
        load_explainer(Other())


# --------------------------------------------------------------------------- the explainers
@pytest.mark.parametrize("plugin,name", [("ast", "integrated-gradients"), ("ast", "attention"),
                                         ("densenet201", "gradcam"), ("densenet201", "integrated-gradients")])
def test_explainers_return_maps_on_the_input_grid(plugin, name, tiny_ast, tiny_densenet):
    from steth_hub.preprocess import Preprocessor
    from steth_hub.registry import get_registry

    model = tiny_ast if plugin == "ast" else tiny_densenet
    clips = Preprocessor(None).run(decode(ASTHMA), "x")[:2]
    maps = get_registry().create("explainer", name).explain(model, np.stack([c.samples for c in clips]), target=1)
    features = model.normalise(model.featurise(np.stack([c.samples for c in clips]), 16000))
    frames = features.shape[1] if plugin == "ast" else features.shape[-1]
    assert maps.maps.shape == (2, 128, frames) and maps.target == "asthma"
    assert np.isfinite(maps.maps).all() and maps.maps.min() >= 0 and maps.maps.max() > 0
    low = 20 if plugin == "ast" else 0
    assert low < maps.frequencies[0] < 60 and 7700 < maps.frequencies[-1] < 8000
    assert maps.times[1] - maps.times[0] == pytest.approx(0.01)
    assert maps.times[-1] >= 4.9  # the clip's five seconds


def test_integrated_gradients_add_up_to_the_score_change(tiny_ast):
    """Completeness: the attributions sum to score(clip) - score(silence), so the wrapper explains
    the model's log-odds from the silence baseline and nothing else."""
    import torch

    from steth_builtin.integrated_gradients import IntegratedGradientsExplainer
    from steth_hub.preprocess import Preprocessor

    clips = np.stack([c.samples for c in Preprocessor(None).run(decode(ASTHMA), "x")][:2])
    values, delta = IntegratedGradientsExplainer(n_steps=64).attributions(tiny_ast, clips, target=1)

    def score(waveforms):
        x = tiny_ast.normalise(tiny_ast.featurise(waveforms, 16000))
        with torch.no_grad():
            logits = tiny_ast.net(input_values=x).logits
        return (logits[:, 1] - logits[:, 0]).numpy()

    change = score(clips) - score(np.zeros_like(clips))
    sums = values.reshape(len(clips), -1).sum(axis=1)
    assert np.allclose(sums, change, atol=0.05 * np.abs(change).max() + 1e-3), (sums, change, delta)


def test_attention_patches_land_on_their_centres():
    from transformers import ASTConfig

    from steth_builtin.attention import patch_grid, patches_to_input

    config = ASTConfig(num_mel_bins=128, max_length=200, patch_size=16, frequency_stride=10, time_stride=10)
    f_dim, t_dim, rows, cols = patch_grid(config)
    assert (f_dim, t_dim) == (12, 19) and rows[0] == 7.5 and cols[1] == 17.5
    grid = np.zeros((1, f_dim, t_dim))
    grid[0, 3, 5] = 1.0
    mapped = patches_to_input(grid, config)
    assert mapped.shape == (1, 128, 200)
    row, col = np.unravel_index(np.argmax(mapped[0]), mapped[0].shape)
    assert abs(row - rows[3]) <= 0.5 and abs(col - cols[5]) <= 0.5


# --------------------------------------------------------------------------- the API end to end
def test_explain_places_the_maps_over_the_whole_recording(explanation, tiny_ast_dir):
    from steth_hub.screening import screen

    e = explanation
    result = screen(ASTHMA, model=tiny_ast_dir)
    assert e.probability == pytest.approx(result.probability) and e.threshold == result.threshold
    assert e.decision == result.decision and e.label in ("asthma", "not_asthma")
    assert e.explainer == "integrated-gradients" and e.model == str(tiny_ast_dir)
    assert e.map.shape == e.spectrogram.shape == (len(e.frequencies), len(e.times))
    assert abs(e.duration - 10.0) < 0.02 and e.frequencies[-1] < 8000
    assert np.allclose(e.clip_starts, [0.5, 2.5, 4.5]) and np.allclose(e.clip_seconds, 5.0)  # excerpt-10s
    assert e.band_limit_hz == 2000.0  # a 4 kHz file, and the preset's band limit
    assert e.coverage[e.times < 0.45].max() == 0 and e.coverage[e.times > 9.55].max() == 0  # trimmed
    assert e.coverage[(e.times > 4.6) & (e.times < 5.4)].min() == 3  # three clips overlap here
    assert np.isfinite(e.map).all() and e.map.min() >= 0 and e.map.max() == pytest.approx(1.0)
    assert e.map[:, e.coverage == 0].max() == 0
    assert e.target == ("asthma" if e.decision else "not_asthma")


def test_explanation_to_dict_is_json(explanation):
    d = json.loads(json.dumps(explanation.to_dict()))
    assert d["n_clips"] == 3 and d["disclaimer"] == "screening support, not a diagnosis"
    assert set(d["peak"]) == {"time_s", "frequency_hz"} and 0 <= d["share_above_band_limit"] <= 1
    full = explanation.to_dict(arrays=True)
    assert np.asarray(full["map"]).shape == explanation.map.shape and len(full["times"]) == len(explanation.times)


def test_explain_takes_an_array_and_a_target(tiny_ast):
    from steth_hub.explanation import explain

    recording = decode(ASTHMA)
    e = explain(recording.samples, model=tiny_ast, sample_rate=recording.sample_rate, target="not_asthma",
                explainer="attention")
    assert e.target == "not_asthma" and e.source == "<array>" and e.explainer == "attention"
    with pytest.raises(ConfigError, match="target"):
        explain(ASTHMA, model=tiny_ast, target="copd")


def _counted(monkeypatch, cls, method: str, calls: dict, key: str) -> None:
    original = getattr(cls, method)

    def counting(self, *args, **kwargs):
        calls[key] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, counting)


def test_explain_preprocesses_once_and_a_screening_result_is_explained_as_it_is(tiny_ast, monkeypatch):
    """One recording, one preprocessing and one forward pass (explain() used to preprocess twice);
    a result from screen() is explained with its own clips and P(asthma): nothing is computed again."""
    import dataclasses

    from steth_hub.explanation import explain, explain_result
    from steth_hub.preprocess import Preprocessor
    from steth_hub.screening import screen

    calls = {"preprocess": 0, "forward": 0}
    _counted(monkeypatch, Preprocessor, "run", calls, "preprocess")
    _counted(monkeypatch, type(tiny_ast), "predict_proba", calls, "forward")
    direct = explain(ASTHMA, model=tiny_ast, explainer="attention")
    assert calls == {"preprocess": 1, "forward": 1}
    result = screen(ASTHMA, model=tiny_ast)
    assert calls == {"preprocess": 2, "forward": 2}
    assert "computed" not in result.to_dict() and result.computed.waveforms.shape[0] == result.n_clips == 3
    reused = explain(result, explainer="attention")  # the public API takes the result too
    assert calls == {"preprocess": 2, "forward": 2}
    assert reused.probability == result.probability and reused.decision == result.decision
    assert reused.probability == pytest.approx(direct.probability) and np.allclose(reused.map, direct.map, atol=1e-5)
    assert np.array_equal(reused.clip_starts, result.clip_starts) and reused.model == result.model
    with pytest.raises(ConfigError, match="did not keep its clips"):
        explain_result(dataclasses.replace(result, computed=None))


def test_png_is_readable_and_written_atomically(explanation, tmp_path, monkeypatch):
    import matplotlib.image

    import steth_hub.explanation as module

    png = explanation.save_png(tmp_path / "map.png")
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 600 and image.shape[1] > 900
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]
    before = png.read_bytes()

    def broken(_):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(module, "draw", broken)
    with pytest.raises(RuntimeError):
        explanation.save_png(png)
    assert png.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]


@pytest.mark.parametrize("probability, threshold, shown", [
    (0.3, 0.49715, ("0.30", "0.497")), (0.495, 0.49715, ("0.495", "0.497")), (0.499, 0.49715, ("0.499", "0.497")),
    (0.4971, 0.49715016, ("0.4971", "0.4972")), (0.4968, 0.49715016, ("0.4968", "0.4972")),
    (0.49715, 0.49715, ("0.497", "0.497")), (0.496, 0.5, ("0.496", "0.500")), (0.7, 0.5, ("0.70", "0.500"))])
def test_decision_numbers_never_put_p_on_the_wrong_side_of_the_threshold(probability, threshold, shown):
    from steth_hub.explanation import decision_numbers

    p_text, t_text = decision_numbers(probability, threshold)
    assert (p_text, t_text) == shown
    assert (float(p_text) >= float(t_text)) == (probability >= threshold)


def test_the_picture_shows_the_threshold_with_3_decimals(explanation):
    import dataclasses

    import matplotlib.pyplot as plt

    from steth_hub.explanation import draw

    near = dataclasses.replace(explanation, probability=0.495, threshold=0.49715, decision=False)
    fig = draw(near)
    try:
        title = fig._suptitle.get_text()
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    finally:
        plt.close(fig)
    assert "P(asthma) = 0.495: asthma not suspected at threshold 0.497" in title
    assert " threshold 0.497" in texts and "0.50" not in title


def test_the_package_functions_stay_callable_however_the_modules_were_imported():
    code = ("import steth_hub.explanation, steth_hub.screening, steth_hub; from steth_hub import explain, screen; "
            "assert callable(steth_hub.explain) and callable(explain); "
            "assert callable(steth_hub.screen) and callable(screen); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_importing_the_explain_modules_stays_light():
    heavy = ["torch", "transformers", "matplotlib", "captum", "pytorch_grad_cam", "timm", "sklearn", "librosa",
             "datasets", "gradio"]
    code = ("import sys, steth_hub.explanation, steth_hub.commands.explain, steth_builtin.explainers; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the command
def test_steth_explain_writes_a_png_and_json(tiny_ast_dir, tmp_path):
    from click.testing import CliRunner

    from steth_hub.cli import main

    out = tmp_path / "asthma.png"
    result = CliRunner().invoke(main, ["explain", str(ASTHMA), "--model", str(tiny_ast_dir), "--out", str(out),
                                       "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["failures"] == [] and data["results"][0]["png"] == str(out) and out.stat().st_size > 10_000
    assert data["results"][0]["explainer"] == "integrated-gradients" and "not a diagnosis" in data["disclaimer"]


def test_steth_explain_goes_on_after_a_bad_file(tiny_ast_dir, tmp_path):
    from click.testing import CliRunner

    from steth_hub.cli import main

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    out = tmp_path / "pictures"
    out.mkdir()
    result = CliRunner().invoke(main, ["explain", str(bad), str(ASTHMA), "--model", str(tiny_ast_dir),
                                       "--explainer", "attention", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "failed: " in result.output and "broken.wav" in result.output and "fix:" in result.output
    assert (out / f"{ASTHMA.stem}.png").is_file() and not (out / "broken.png").exists()
    assert "1 explained, 1 failed" in result.output


def test_steth_explain_names_a_wrong_explainer(tiny_ast_dir, tmp_path):
    from click.testing import CliRunner

    from steth_hub.cli import main

    result = CliRunner().invoke(main, ["explain", str(ASTHMA), "--model", str(tiny_ast_dir), "--explainer",
                                       "gradcam", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "gradcam" in result.output and "not the 'ast' classifier" in result.output
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("explainer", ["attention", "integrated-gradients"])
def test_maps_of_a_front_end_at_its_own_rate_cover_the_whole_clip(explainer):
    """The embedded model's front end runs at 4 kHz on 16 kHz clips (100 ms frames every 40 ms):
    its maps must span each 5 s clip and 20-2000 Hz, not the 1.2 s and 8 kHz a 16 kHz framing implies."""
    from steth_hub import explain, from_pretrained

    model = from_pretrained("steth/ast-asthma")
    assert model.front_end_rate == 4000 and model.sample_rate == 16000
    e = explain(ASTHMA, model=model, explainer=explainer)
    analysed = e.coverage > 0
    assert e.times[analysed].min() < 0.6 and e.times[analysed].max() > 9.4  # clips 0.5-5.5, 2.5-7.5, 4.5-9.5
    assert analysed[(e.times > 0.6) & (e.times < 9.4)].all()
    in_band = e.map[e.frequencies <= 2000.0][:, analysed]
    assert in_band.sum() > 0.99 * e.map[:, analysed].sum()  # nothing placed above the front end's 2 kHz
