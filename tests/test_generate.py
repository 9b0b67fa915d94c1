"""steth generate with breath-diffusion: prompts, a tiny model trained here on real clips, the shipped
model, the WAV + JSON output, --check, and every bad input as a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAPER_PROMPT = "Breath sample from F-8yo diagnosed with bronchial asthma"


# ---------------------------------------------------------------------- prompts
def test_prompt_sentences_round_trip_and_read_the_papers_form():
    from steth_hub.generation.prompts import Conditions, build_prompt, conditions, parse_prompt

    assert parse_prompt(PAPER_PROMPT) == Conditions("asthma", "F", 8.0)
    assert build_prompt(conditions("asthma", "f", "8")) == PAPER_PROMPT
    for cond in (conditions("normal", "M", 61), conditions("copd"), conditions("heart failure", None, 44.5)):
        assert parse_prompt(build_prompt(cond)) == cond
    assert parse_prompt("healthy girl, 12 years old") == Conditions("normal", "F", 12.0)
    assert conditions("asthma", "F", 8).age_band == "<18" and conditions("asthma", "F", 8).label == 1
    assert conditions("normal").label == 0


@pytest.mark.parametrize("call, words", [
    (lambda c: c("asthmaa"), ["asthmaa", "asthma, normal"]),
    (lambda c: c("asthma", "X"), ["'X'", "--sex F"]),
    (lambda c: c("asthma", "F", -3), ["-3", "0-120"]),
    (lambda c: c("asthma", "F", "eight"), ["eight", "--age"]),
])
def test_bad_patient_facts_name_the_value_and_the_fix(call, words):
    from steth_hub.errors import ConfigError
    from steth_hub.generation.prompts import conditions

    with pytest.raises(ConfigError) as info:
        call(conditions)
    text = str(info.value)
    assert all(w in text for w in words) and info.value.fix and "\n" not in text


def test_a_prompt_without_a_diagnosis_is_refused_by_the_conditioned_model():
    from steth_hub.errors import ConfigError
    from steth_hub.generation.prompts import parse_prompt

    with pytest.raises(ConfigError, match="names no diagnosis"):
        parse_prompt("Breath sample from F-8yo")


# ---------------------------------------------------------------------- a tiny model, trained here
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, example_clipset):
    """breath-diffusion, narrower than the shipped one, trained for 40 steps on the shipped example recordings."""
    from steth_builtin.generators_diffusion import train
    from steth_hub.generation.prompts import Conditions

    conds = [Conditions("asthma" if y == 1 else "normal", "F", 30.0) for y in example_clipset.labels]
    out = tmp_path_factory.mktemp("gen") / "tiny"
    config = train(example_clipset.waveforms, example_clipset.sample_rate, conds, out, name="tiny",
                   training={"steps": 40, "batch_size": 8, "warmup_steps": 5}, progress=False,
                   unet={"block_out_channels": [8, 16, 16], "attention_head_dim": 8})
    return out, config


def test_training_lowers_the_loss_and_writes_safetensors_only(tiny_model, example_clipset):
    out, config = tiny_model
    tenths = config["training"]["loss_per_tenth"]
    assert tenths[-1] < tenths[0], tenths
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert config["training"]["n_clips"] == len(example_clipset) and config["parameters"] > 10_000


def _generate(args):
    from steth_hub.cli import main

    return CliRunner().invoke(main, ["generate", *args])


def test_cli_writes_wavs_and_a_sidecar_and_the_seed_fixes_the_audio(tiny_model, tmp_path):
    model, _ = tiny_model
    common = ["--diagnosis", "asthma", "--sex", "F", "--age", "8", "--seconds", "2", "--n", "2", "--steps", "3",
              "--model", str(model), "--quiet"]
    r1 = _generate([*common, "--seed", "3", "--out", str(tmp_path / "a")])
    assert r1.exit_code == 0, r1.output
    r2 = _generate([*common, "--seed", "3", "--out", str(tmp_path / "b")])
    r3 = _generate([*common, "--seed", "4", "--out", str(tmp_path / "c")])
    assert r2.exit_code == 0 and r3.exit_code == 0
    side = json.loads((tmp_path / "a" / "generation.json").read_text())
    assert side["prompt"] == PAPER_PROMPT and side["seed"] == 3 and side["n"] == 2
    assert side["model"]["plugin"] == "breath-diffusion" and side["settings"]["steps"] == 3
    assert side["conditions"] == {"diagnosis": "asthma", "sex": "F", "age": 8.0, "age_band": "<18"}
    files = sorted(p.name for p in (tmp_path / "a").glob("*.wav"))
    assert files == ["clip-000.wav", "clip-001.wav"] == [Path(c["file"]).name for c in side["clips"]]
    audio, rate = sf.read(tmp_path / "a" / "clip-000.wav", dtype="float32")
    assert rate == 4000 and len(audio) == 8000 and np.isfinite(audio).all() and audio.std() > 1e-3
    same, _ = sf.read(tmp_path / "b" / "clip-000.wav", dtype="float32")
    other, _ = sf.read(tmp_path / "c" / "clip-000.wav", dtype="float32")
    second, _ = sf.read(tmp_path / "a" / "clip-001.wav", dtype="float32")
    assert np.array_equal(audio, same)
    assert not np.allclose(audio, other, atol=1e-3) and not np.allclose(audio, second, atol=1e-3)


def test_out_is_never_an_input_nor_a_foreign_folder(tiny_model, tmp_path):
    model, _ = tiny_model
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    args = ["--diagnosis", "normal", "--n", "1", "--steps", "2", "--model", str(model), "--quiet"]
    r = _generate([*args, "--out", str(foreign)])
    assert r.exit_code == 2 and "not empty" in r.output and (foreign / "notes.txt").read_text() == "keep me"
    assert not list(foreign.glob("*.wav"))
    r = _generate([*args, "--out", str(model)])
    assert r.exit_code == 2 and "input" in r.output
    assert _generate([*args, "--out", str(tmp_path / "g")]).exit_code == 0
    assert _generate([*args, "--out", str(tmp_path / "g"), "--seed", "9"]).exit_code == 0  # an earlier output
    assert json.loads((tmp_path / "g" / "generation.json").read_text())["seed"] == 9
    assert _generate([*args, "--out", str(foreign), "--overwrite"]).exit_code == 0


@pytest.mark.parametrize("args, words", [
    (["--diagnosis", "asthma", "--seconds", "abc"], ["abc", "--seconds"]),
    (["--diagnosis", "asthma", "--seconds", "0"], ["'0'", "1-30 s"]),
    (["--diagnosis", "asthma", "--seconds", "120"], ["120", "1-30 s"]),
    (["--diagnosis", "asthma", "--n", "0"], ["--n 0", "--n 1"]),
    (["--diagnosis", "flu"], ["flu", "asthma, normal"]),
    (["--diagnosis", "asthma", "--sex", "X"], ["'X'", "--sex F"]),
    (["--diagnosis", "asthma", "--age", "-3"], ["-3", "--age"]),
    (["--prompt", "Breath sample from F-8yo"], ["names no diagnosis", "--diagnosis"]),
    (["--prompt", "asthma", "--diagnosis", "asthma"], ["both --prompt and --diagnosis"]),
    ([], ["no --prompt and no --diagnosis"]),
    (["--diagnosis", "asthma", "--model", "no-such-generator"], ["no-such-generator", "steth/breath-diffusion"]),
    (["--diagnosis", "asthma", "--keep-threshold", "0.5"], ["--keep-threshold needs --check"]),
    (["--diagnosis", "asthma", "--check", "--keep-threshold", "2"], ["2", "0-1"]),
])
def test_bad_inputs_are_one_line_errors_naming_the_thing_and_the_fix(args, words, tiny_model, tmp_path):
    model, _ = tiny_model
    if "--model" not in args:
        args = [*args, "--model", str(model)]
    r = _generate([*args, "--out", str(tmp_path / "out"), "--quiet"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error:") and "fix:" in lines[0], r.output
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- --check
def test_check_scores_every_clip_and_keeps_by_the_threshold(tiny_model, tmp_path):
    """The default classifier (the embedded efficientat-asthma) scores each clip; the threshold decides."""
    model, _ = tiny_model
    args = ["--prompt", PAPER_PROMPT, "--n", "2", "--steps", "2", "--model", str(model), "--check", "--quiet"]
    keep_all = _generate([*args, "--keep-threshold", "0", "--out", str(tmp_path / "all")])
    assert keep_all.exit_code == 0, keep_all.output
    assert "2/2 clips (100.0%) classified as prompted (asthma) by steth/efficientat-asthma" in keep_all.output
    side = json.loads((tmp_path / "all" / "generation.json").read_text())
    probs = [c["p_asthma"] for c in side["clips"]]
    assert all(0.0 <= p <= 1.0 for p in probs) and side["check"]["classifier"] == "steth/efficientat-asthma"
    keep_none = _generate([*args, "--keep-threshold", "1", "--out", str(tmp_path / "none")])
    assert keep_none.exit_code == 0 and "0/2 clips (0.0%)" in keep_none.output
    assert not list((tmp_path / "none").glob("*.wav")) and len(list((tmp_path / "none" / "rejected").glob("*.wav"))) == 2
    # the same seed and model give the same clips, so the same probabilities, whatever the threshold
    again = json.loads((tmp_path / "none" / "generation.json").read_text())
    assert [c["p_asthma"] for c in again["clips"]] == probs
    # at a threshold between the two probabilities, exactly the clips above it are kept for an asthma prompt
    if abs(probs[0] - probs[1]) > 1e-4:
        mid = (probs[0] + probs[1]) / 2
        r = _generate([*args, "--keep-threshold", str(mid), "--out", str(tmp_path / "mid")])
        kept = [c["kept"] for c in json.loads((tmp_path / "mid" / "generation.json").read_text())["clips"]]
        assert kept == [p >= mid for p in probs] and r.exit_code == 0


def test_check_reads_real_asthma_above_real_normal_through_the_synthetic_path(examples_dir):
    """score_recordings (the --check path: preset without trimming) on real example recordings gives the
    embedded model's ordering: the KAUH asthma examples above the normal ones."""
    import steth_hub
    from steth_hub.audio import decode
    from steth_hub.generation.check import score_recordings

    model = steth_hub.from_pretrained("steth/efficientat-asthma")
    asthma = [decode(p) for p in sorted(examples_dir.glob("kauh/*sthma*.wav"))]
    normal = [decode(p) for p in sorted(examples_dir.glob("kauh/*_N,*.wav"))]
    pa, pn = score_recordings(asthma, model), score_recordings(normal, model)
    assert min(pa) > max(pn), (pa, pn)


# ---------------------------------------------------------------------- the shipped model
def test_the_shipped_generator_works_offline_and_is_small(tmp_path):
    from steth_hub.generation import EMBEDDED_GENERATORS, load_generator

    folder = EMBEDDED_GENERATORS["steth/breath-diffusion"][1]
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) for name in files)
    assert sum(files.values()) < 5_000_000
    card = (folder / "README.md").read_text()
    assert "CC BY 4.0" in card and "ICBHI" in card and "Griffin-Lim" in card
    gen = load_generator()
    assert gen.plugin_name == "breath-diffusion" and Path(gen.path) == folder
    (clip,) = gen.generate(PAPER_PROMPT, 3.0, 1, seed=0, steps=4)
    assert clip.sample_rate == 4000 and len(clip.samples) == 12000
    assert np.isfinite(clip.samples).all() and np.abs(clip.samples).max() == pytest.approx(0.9, abs=1e-3)
    r = _generate(["--prompt", PAPER_PROMPT, "--n", "1", "--seconds", "1", "--steps", "2", "--quiet",
                   "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "o" / "generation.json").read_text())
    assert side["model"]["default"] == "steth/breath-diffusion"


def test_plugins_lists_both_generators():
    from steth_hub.cli import main

    r = CliRunner().invoke(main, ["plugins", "--kind", "generator"])
    assert r.exit_code == 0
    assert "breath-diffusion" in r.output and "stable-audio" in r.output


# ---------------------------------------------------------------------- synthetic clips in an evaluation
def test_synthetic_clips_never_carry_a_real_patient_id(example_clipset):
    from steth_hub.clips import ClipSet
    from steth_hub.generation.data import is_synthetic, synthetic_clipset

    synth = synthetic_clipset(np.zeros((3, example_clipset.waveforms.shape[1]), np.float32),
                              example_clipset.sample_rate, 1, tag="fold-0")
    both = ClipSet.concatenate([example_clipset, synth])
    assert is_synthetic(both.patient_ids).sum() == 3
    assert not set(synth.patient_ids) & set(example_clipset.patient_ids)
    assert len(set(synth.patient_ids)) == 3 and set(synth.labels.tolist()) == {1}
