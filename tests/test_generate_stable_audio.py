"""The stable-audio generator drives the real diffusers StableAudioPipeline (T5 -> DiT -> Oobleck -> WAV)
on a tiny random configuration saved here; the fine-tuning recipe trains only the DiT."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "Breath sample from F-8yo diagnosed with bronchial asthma"
WORDS = ["▁Breath", "▁sample", "▁from", "▁diagnosed", "▁with", "▁bronchial", "▁asthma", "▁no", "▁respiratory",
         "▁disease", "▁F", "▁M", "-", "yo"]


def build_tiny_pipeline(folder):
    """A StableAudioPipeline with random tiny weights (T5 tokenizer built offline, see ../shared/NOTES.md)."""
    import torch
    from diffusers import AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(0)
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-▁"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -float(i)) for i, w in enumerate(WORDS)] \
        + [(c, -20.0) for c in chars]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=32)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                           num_heads=4))
    vae = AutoencoderOobleck(encoder_hidden_size=4, downsampling_ratios=[2, 4], decoder_channels=3,
                             decoder_input_channels=2, audio_channels=2, channel_multiples=[2, 4], sampling_rate=2000)
    dit = StableAudioDiTModel(sample_size=256, in_channels=2, num_layers=2, attention_head_dim=4, num_attention_heads=2,
                              num_key_value_attention_heads=2, out_channels=2, cross_attention_dim=4, time_proj_dim=8,
                              global_states_input_dim=8, cross_attention_input_dim=4)
    projection = StableAudioProjectionModel(text_encoder_dim=32, conditioning_dim=4, min_value=0, max_value=32)
    scheduler = CosineDPMSolverMultistepScheduler(solver_order=2, prediction_type="v_prediction", sigma_data=1.0)
    pipe = StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
                               transformer=dit, scheduler=scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("stable-audio") / "tiny")


@pytest.fixture(autouse=True)
def _quiet_torchsde():
    with warnings.catch_warnings():  # the tiny sigma range makes torchsde's Brownian interval warn
        warnings.simplefilter("ignore", UserWarning)
        yield


def _generate(args):
    from steth_hub.cli import main

    return CliRunner().invoke(main, ["generate", *args])


def test_prompt_to_wav_through_the_real_pipeline(tiny_pipeline, tmp_path):
    from steth_hub.generation import generator_plugin_of

    assert generator_plugin_of(tiny_pipeline) == "stable-audio"
    assert not list(tiny_pipeline.rglob("*.bin"))  # safetensors only
    common = ["--model", str(tiny_pipeline), "--prompt", PROMPT, "--seconds", "1", "--n", "2", "--steps", "2",
              "--guidance", "6.5", "--quiet"]
    r = _generate([*common, "--seed", "1", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert _generate([*common, "--seed", "1", "--out", str(tmp_path / "b")]).exit_code == 0
    assert _generate([*common, "--seed", "2", "--out", str(tmp_path / "c")]).exit_code == 0
    side = json.loads((tmp_path / "a" / "generation.json").read_text())
    assert side["model"]["plugin"] == "stable-audio" and side["model"]["name"] == str(tiny_pipeline)
    assert side["prompt"] == PROMPT and side["settings"] == {"steps": 2, "guidance_scale": 6.5}
    assert side["conditions"]["diagnosis"] == "asthma"
    audio, rate = sf.read(tmp_path / "a" / "clip-000.wav", dtype="float32")
    assert rate == 2000 and audio.ndim == 1 and len(audio) == 2000 and np.isfinite(audio).all()
    assert np.abs(audio).max() > 0
    same, _ = sf.read(tmp_path / "b" / "clip-000.wav", dtype="float32")
    other, _ = sf.read(tmp_path / "c" / "clip-000.wav", dtype="float32")
    assert np.array_equal(audio, same) and not np.array_equal(audio, other)


def test_seconds_beyond_the_dits_window_is_a_one_line_error(tiny_pipeline, tmp_path):
    r = _generate(["--model", str(tiny_pipeline), "--prompt", PROMPT, "--seconds", "5", "--n", "1", "--quiet",
                   "--out", str(tmp_path / "o")])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "'5'" in lines[0] and "stable-audio" in lines[0], r.output
    assert "0.5-1.024 s" in lines[0] and not (tmp_path / "o").exists()


def test_stable_audio_open_is_never_downloaded(hf_cache, tmp_path):
    r = _generate(["--model", "stabilityai/stable-audio-open-1.0", "--prompt", PROMPT, "--n", "1", "--quiet",
                   "--out", str(tmp_path / "o")])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "nothing is downloaded" in lines[0] and "huggingface-cli download" in lines[0]
    assert not list(hf_cache.rglob("*.safetensors"))


def test_finetuning_trains_the_dit_only_on_real_clips_with_patient_prompts(tiny_pipeline, tmp_path, example_clipset):
    from safetensors.numpy import load_file

    from steth_builtin.generators_stable_audio import finetune
    from steth_hub.generation import load_generator
    from steth_hub.generation.prompts import Conditions, build_prompt

    prompts = [build_prompt(Conditions("asthma" if y else "normal", "F", 30.0)) for y in example_clipset.labels]
    out = tmp_path / "finetuned"
    facts = finetune(tiny_pipeline, example_clipset.waveforms[:6], example_clipset.sample_rate, prompts[:6], out,
                     recipe={"steps": 3, "batch_size": 2, "learning_rate": 1e-3}, progress=False)
    assert np.isfinite(facts["loss_first"]) and np.isfinite(facts["loss_last"]) and facts["n_clips"] == 6
    assert "frozen" in facts["trained"]

    def weights(folder, part):
        (file,) = (folder / part).glob("*.safetensors")
        return load_file(str(file))

    before, after = weights(tiny_pipeline, "transformer"), weights(out, "transformer")
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    for part in ("vae", "text_encoder", "projection_model"):
        a, b = weights(tiny_pipeline, part), weights(out, part)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), part
    gen = load_generator(out)
    (clip,) = gen.generate(PROMPT, 1.0, 1, seed=0, steps=2)
    assert clip.sample_rate == 2000 and np.isfinite(clip.samples).all()


def test_the_papers_settings_are_kept_verbatim_and_drive_generate(tiny_pipeline, tmp_path):
    from pathlib import Path

    import yaml

    folder = Path(__file__).resolve().parents[1] / "configs" / "generators"
    read = {name: yaml.safe_load((folder / f"stable-audio-{name}.yaml").read_text())
            for name in ("pretrain", "asthma", "healthy", "finetune")}
    assert read["pretrain"]["paper"] == {"steps": 250, "cfg_scale": [3, 6, 9], "temperature": 1.0, "top_k": 100}
    assert read["asthma"]["paper"] == {"steps": 200, "cfg_scale": 6.5, "temperature": 0.9, "top_k": 50}
    assert read["healthy"]["paper"] == {"steps": 200, "cfg_scale": 5.5, "temperature": 0.95, "top_k": 100}
    assert read["finetune"]["base_model"] == "stabilityai/stable-audio-open-1.0"
    for name in ("asthma", "healthy"):
        assert read[name]["sampling"] == {"steps": read[name]["paper"]["steps"],
                                          "guidance_scale": read[name]["paper"]["cfg_scale"]}
    mine = tmp_path / "asthma.yaml"
    mine.write_text(yaml.safe_dump({**read["asthma"], "model": str(tiny_pipeline)}))
    r = _generate(["--config", str(mine), "--steps", "2", "--diagnosis", "asthma", "--seconds", "1", "--n", "1",
                   "--quiet", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "generation.json").read_text())["settings"] == {"steps": 2,
                                                                                      "guidance_scale": 6.5}
    sweep = tmp_path / "pretrain.yaml"
    sweep.write_text(yaml.safe_dump({**read["pretrain"], "model": str(tiny_pipeline)}))
    r = _generate(["--config", str(sweep), "--diagnosis", "asthma", "--quiet", "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "sweeps guidance_scale [3, 6, 9]" in r.output and "--guidance" in r.output
