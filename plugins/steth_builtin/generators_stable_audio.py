"""``stable-audio``: Stable Audio Open through diffusers' ``StableAudioPipeline``, and its fine-tuning.

The paper adapts Stable Audio Open (a DiT denoising the latents of an Oobleck autoencoder,
conditioned on T5 text embeddings and on the clip's start/end seconds) to breath sounds with
prompts such as ``"Breath sample from F-8yo diagnosed with bronchial asthma"``.

* :class:`StableAudio` loads ``stabilityai/stable-audio-open-1.0`` from the local Hugging Face
  cache, or a pipeline folder (a fine-tuned one, or any ``StableAudioPipeline.save_pretrained``
  output), with ``local_files_only=True``: nothing is downloaded at run time. ``generate`` runs the
  pipeline (prompt -> latents -> Oobleck decoder -> waveform) and returns mono recordings at the
  autoencoder's rate (44.1 kHz for Stable Audio Open).
* :func:`finetune` is the recipe: the DiT is trained on a corpus's clips with prompts built from
  patient facts (:func:`steth_hub.generation.prompts.build_prompt`); the autoencoder, the T5 text
  encoder and the conditioning projection stay frozen. The loss is the pipeline's own
  parameterisation: v-prediction under the EDM preconditioning of its
  ``CosineDPMSolverMultistepScheduler`` (sigma_data 1: x_t = cos(a) x0 + sin(a) noise), with the
  prompt dropped to the null (all-zero) conditioning 10% of the time, which is what the pipeline's
  classifier-free guidance expects. Settings: ``configs/generators/stable-audio-finetune.yaml``; the paper's
  sampling settings: ``configs/generators/stable-audio-*.yaml``. It runs on a GPU where one is lent, and on a
  tiny random configuration on a CPU in the tests.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from steth_hub.errors import ConfigError, ModelError

PLUGIN = "stable-audio"
DEFAULT_SAMPLING = {"steps": 200, "guidance_scale": 7.0}
DEFAULT_FINETUNE = {"steps": 1000, "batch_size": 4, "learning_rate": 1e-5, "weight_decay": 1e-3,
                    "p_uncond": 0.1, "seed": 0, "gradient_clip": 1.0}


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def _quiet_loading():
    """No loading bars or deprecation notes from diffusers/transformers/torch on a user's terminal."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()


def load_pipeline(model: str | os.PathLike | None = None, *, device: str | None = None):
    """``StableAudioPipeline`` from a folder or a repo id in the local cache; a clear error otherwise."""
    import torch
    from diffusers import StableAudioPipeline

    from steth_hub.generation import STABLE_AUDIO_REPO

    source = os.fspath(model) if model is not None else STABLE_AUDIO_REPO
    device = _device(device)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    try:
        with _quiet_loading():
            pipe = StableAudioPipeline.from_pretrained(source, local_files_only=True, dtype=dtype)
    except Exception as exc:  # not cached, not a pipeline folder, damaged files
        where = "folder" if Path(source).expanduser().is_dir() else "Hugging Face cache"
        raise ModelError(
            f"cannot load Stable Audio model {source!r} from the local {where} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); nothing is downloaded "
            "at run time", path=source if where == "folder" else None,
            fix=f"on a machine with network, accept the licence of {STABLE_AUDIO_REPO} and run "
                f"`huggingface-cli download {STABLE_AUDIO_REPO}` into HF_HOME, or pass --model with a "
                "StableAudioPipeline folder") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def max_seconds(pipe) -> float:
    hop = int(np.prod(pipe.vae.config.downsampling_ratios))
    return float(pipe.transformer.config.sample_size * hop / pipe.vae.config.sampling_rate)


class StableAudio:
    """The ``stable-audio`` generator: ``generate(prompt, seconds, n)`` with a StableAudioPipeline."""

    plugin_name = PLUGIN

    def __init__(self, model: str | os.PathLike | None = None, *, device: str | None = None, pipeline=None):
        from steth_hub.generation import STABLE_AUDIO_REPO

        self.source = os.fspath(model) if model is not None else STABLE_AUDIO_REPO
        self.device = device
        self._pipe = pipeline
        self._config = {}

    @property
    def pipe(self):
        if self._pipe is None:
            self._pipe = load_pipeline(self.source, device=self.device)
        return self._pipe

    @property
    def name(self) -> str:
        return self.source

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vae.config.sampling_rate)

    def seconds_range(self) -> tuple[float, float]:
        return 0.5, max_seconds(self.pipe)

    def settings(self, *, steps: int | None = None, guidance_scale: float | None = None) -> dict:
        s = dict(DEFAULT_SAMPLING)
        if steps is not None:
            s["steps"] = int(steps)
        if guidance_scale is not None:
            s["guidance_scale"] = float(guidance_scale)
        return s

    def conditions_of(self, prompt):
        """The patient facts named in the prompt, when it names any (None otherwise: free text is fine)."""
        from steth_hub.generation.prompts import Conditions, parse_prompt

        if isinstance(prompt, Conditions):
            return prompt
        try:
            return parse_prompt(prompt)
        except ConfigError:
            if not isinstance(prompt, str) or not prompt.strip():
                raise
            return None

    def generate(self, prompt, seconds: float = 5.0, n: int = 1, *, seed: int = 0, steps: int | None = None,
                 guidance_scale: float | None = None, negative_prompt: str | None = None, batch_size: int = 4,
                 progress: Callable[[int], None] | None = None) -> list:
        """``n`` mono recordings at the autoencoder's rate; clip ``i`` is seeded ``seed * 100003 + i``."""
        import torch

        from steth_hub.audio import Recording
        from steth_hub.generation.prompts import Conditions, build_prompt
        from steth_hub.generation.writer import check_seconds

        text = build_prompt(prompt) if isinstance(prompt, Conditions) else prompt
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("the prompt is empty", fix="give --prompt TEXT or --diagnosis")
        pipe = self.pipe
        check_seconds(seconds, 0.5, max_seconds(pipe), PLUGIN)
        s = self.settings(steps=steps, guidance_scale=guidance_scale)
        out = []
        for start in range(0, int(n), batch_size):
            stop = min(int(n), start + batch_size)
            gens = [torch.Generator(device="cpu").manual_seed(int(seed) * 100003 + i) for i in range(start, stop)]
            result = pipe([text] * (stop - start), negative_prompt=None if negative_prompt is None
                          else [negative_prompt] * (stop - start),
                          audio_end_in_s=float(seconds), num_inference_steps=s["steps"],
                          guidance_scale=s["guidance_scale"], num_waveforms_per_prompt=1, generator=gens,
                          output_type="np")
            audio = np.asarray(result.audios, dtype=np.float32)  # [n, channels, samples]
            for clip in audio:
                mono = clip.mean(axis=0) if clip.ndim == 2 else clip
                peak = float(np.abs(mono).max())
                if not math.isfinite(peak):
                    raise ModelError("the pipeline returned non-finite audio", path=self.source,
                                     fix="check the model files; on a GPU, try float32")
                out.append(Recording(samples=np.ascontiguousarray(mono), sample_rate=self.sample_rate,
                                     source=f"<{PLUGIN}>"))
            if progress is not None:
                progress(stop - start)
        return out


# ---------------------------------------------------------------------- fine-tuning
def _condition(pipe, prompts: Sequence[str], seconds: float, device):
    """(encoder_hidden_states, global_hidden_states) exactly as the pipeline builds them."""
    import torch

    embeds = pipe.encode_prompt(list(prompts), device, False)
    start, end = pipe.encode_duration(0.0, float(seconds), device, False, len(prompts))
    text = torch.cat([embeds, start, end], dim=1)
    glob = torch.cat([start, end], dim=2)
    return text, glob


def finetune(model: str | os.PathLike | None, waveforms: np.ndarray, sample_rate: int, prompts: Sequence[str],
             out_dir: str | os.PathLike, *, recipe: dict | None = None, device: str | None = None,
             progress: bool | Callable[[str], None] = True) -> dict:
    """Fine-tune the DiT of a StableAudioPipeline on clips and their prompts; save the whole pipeline.

    Args:
        model: the pipeline to start from (a folder, or a repo id in the local cache).
        waveforms: float32 ``[N, S]`` clips at ``sample_rate`` (resampled to the autoencoder's rate).
        prompts: one prompt per clip, e.g. from patient facts with ``build_prompt``.
        out_dir: written atomically as a ``StableAudioPipeline.save_pretrained`` folder, which
            ``steth generate --model OUT`` and :class:`StableAudio` load.
    Returns:
        Training facts (steps, losses, seconds), also written to ``OUT/steth-finetune.json``.
    """
    import torch
    from diffusers import StableAudioPipeline
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    from steth_hub.audio import resample
    from steth_hub.fileio import atomic_directory, atomic_write_json

    if len(waveforms) != len(prompts) or not len(prompts):
        raise ConfigError(f"{len(waveforms)} clips and {len(prompts)} prompts", fix="give one prompt per clip")
    say = progress if callable(progress) else ((lambda m: print(m, flush=True)) if progress else (lambda m: None))
    r = dict(DEFAULT_FINETUNE, **(recipe or {}))
    device = _device(device)
    torch.manual_seed(int(r["seed"]))
    rng = np.random.default_rng(int(r["seed"]))
    from steth_hub.generation import STABLE_AUDIO_REPO

    with _quiet_loading():
        pipe = StableAudioPipeline.from_pretrained(os.fspath(model) if model else STABLE_AUDIO_REPO,
                                                   local_files_only=True, dtype=torch.float32).to(device)
    for frozen in (pipe.vae, pipe.text_encoder, pipe.projection_model):
        frozen.requires_grad_(False).eval()
    dit = pipe.transformer
    dit.requires_grad_(True).train()
    vae_rate = int(pipe.vae.config.sampling_rate)
    hop = int(np.prod(pipe.vae.config.downsampling_ratios))
    n_samples = int(dit.config.sample_size) * hop
    seconds = min(len(waveforms[0]) / float(sample_rate), n_samples / vae_rate)
    # the clips, at the autoencoder's rate, padded with silence to the DiT's window (as Stable Audio is trained)
    audio = np.zeros((len(waveforms), int(pipe.vae.config.audio_channels), n_samples), dtype=np.float32)
    for i, w in enumerate(waveforms):
        x = resample(np.asarray(w, dtype=np.float32), sample_rate, vae_rate)[:n_samples]
        x = x / max(float(np.abs(x).max()), 1e-8) * 0.9
        audio[i, :, :len(x)] = x
    with torch.no_grad():
        latents = torch.cat([pipe.vae.encode(torch.from_numpy(audio[i:i + 8]).to(device)).latent_dist.mode()
                             for i in range(0, len(audio), 8)])
        text, glob = _condition(pipe, prompts, seconds, device)
        null_text, null_glob = torch.zeros_like(text[:1]), glob[:1]
    rotary = get_1d_rotary_pos_embed(pipe.rotary_embed_dim, latents.shape[2] + glob.shape[1], use_real=True,
                                     repeat_interleave_real=False)
    sched = pipe.scheduler
    sigma_data = float(sched.config.sigma_data)
    opt = torch.optim.AdamW([p for p in dit.parameters() if p.requires_grad], lr=float(r["learning_rate"]),
                            weight_decay=float(r["weight_decay"]))
    steps, batch = int(r["steps"]), int(r["batch_size"])
    losses, started = [], time.time()
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(latents), batch)).to(device)
        x0 = latents[idx]
        enc, gl = text[idx].clone(), glob[idx].clone()
        drop = torch.rand(batch, device=device) < float(r["p_uncond"])
        enc[drop] = null_text.to(enc.dtype)
        gl[drop] = null_glob.to(gl.dtype)
        # sigma = sigma_data * tan(pi t / 2), t uniform: the cosine schedule the scheduler samples along
        t = torch.rand(batch, device=device).clamp(1e-4, 1 - 1e-4)
        sigma = (sigma_data * torch.tan(t * math.pi / 2)).view(-1, 1, 1)
        noise = torch.randn_like(x0)
        x_ve = x0 + sigma * noise
        model_in = sched.precondition_inputs(x_ve, sigma)
        c_noise = sched.precondition_noise(sigma.view(-1))
        pred = dit(model_in, c_noise, encoder_hidden_states=enc, global_hidden_states=gl, rotary_embedding=rotary,
                   return_dict=False)[0]
        c_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
        c_out = -sigma * sigma_data / (sigma ** 2 + sigma_data ** 2) ** 0.5
        target = (x0 - c_skip * x_ve) / c_out  # the v the pipeline's preconditioning turns into x0
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), float(r["gradient_clip"]))
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            say(f"fine-tune step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f}")
    dit.eval()
    facts = {"recipe": r, "n_clips": int(len(latents)), "seconds_per_clip": seconds, "device": device,
             "trained": "transformer (DiT) only; vae, text_encoder, projection_model frozen",
             "loss_first": round(float(np.mean(losses[:10])), 5), "loss_last": round(float(np.mean(losses[-10:])), 5),
             "seconds": round(time.time() - started, 1), "started_from": os.fspath(model) if model else None}
    with atomic_directory(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        atomic_write_json(Path(tmp) / "steth-finetune.json", facts)
    return facts
