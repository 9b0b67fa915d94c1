"""``breath-diffusion``: a small spectrogram diffusion model that ships with steth-hub.

What it is: a diffusers ``UNet2DModel`` (three levels, 16/32/64 channels, about 0.64 M
parameters) that denoises a 40-band log-mel image of a 4 kHz breath sound
(:mod:`steth_hub.generation.spectral`), conditioned on the diagnosis, the sex and the age band
(:mod:`steth_hub.generation.prompts`): one learned embedding per attribute, summed and added
to the timestep embedding (``class_embed_type="identity"``). Each attribute has an "unknown"
entry; during training each one is dropped to it with probability 0.15 and all three with
probability 0.1, which gives classifier-free guidance and lets a prompt leave sex or age out.

Training: v-prediction, DDPM cosine noise schedule (1000 steps), AdamW, an exponential moving
average of the weights (what is saved), random crops of 76 frames (4.9 s) of the corpus's
5 s clips. Sampling: DPM-Solver++ (25 steps by default), classifier-free guidance 3.0, then
:meth:`~steth_hub.generation.spectral.LogMel.decode` (mel -> linear by non-negative least
squares, Griffin-Lim phase) to a 4 kHz waveform. The network is fully convolutional, so it
draws any length from 1 to 30 s, but it has only seen 5 s crops.

A model folder holds ``config.json`` (architecture, spectrogram settings, normalisation,
condition vocabularies, sampling defaults, training facts), ``model.safetensors`` and, for a
shipped model, ``README.md`` (its card). Safetensors only.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from steth_hub.errors import ConfigError, ModelError
from steth_hub.generation.prompts import AGE_BANDS, DIAGNOSES, SEXES, Conditions

PLUGIN = "breath-diffusion"
FORMAT = "steth-generator/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MIN_SECONDS, MAX_SECONDS = 1.0, 30.0
#: frames must be a multiple of this (two 2x down-samplings)
FRAME_MULTIPLE = 4

DEFAULT_UNET = {
    "in_channels": 1, "out_channels": 1, "layers_per_block": 1, "block_out_channels": [16, 32, 64],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "UpBlock2D"],
    "class_embed_type": "identity", "norm_num_groups": 8, "attention_head_dim": 32, "add_attention": True,
}
DEFAULT_SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                     "prediction_type": "v_prediction"}
DEFAULT_SAMPLING = {"steps": 25, "guidance_scale": 3.0}
DEFAULT_TRAINING = {"steps": 800, "batch_size": 16, "learning_rate": 1e-3, "weight_decay": 0.0,
                    "ema_decay": 0.995, "crop_frames": 40, "p_drop_each": 0.15, "p_drop_all": 0.1,
                    "warmup_steps": 50, "seed": 0}


def _vocab() -> dict:
    return {"diagnoses": list(DIAGNOSES), "sexes": list(SEXES), "age_bands": [b[0] for b in AGE_BANDS]}


def _build_net(unet_config: dict, vocab: dict):
    import torch
    from diffusers import UNet2DModel

    class BreathDiffusionNet(torch.nn.Module):
        """UNet2DModel + one embedding table per condition (last row of each = unknown)."""

        def __init__(self):
            super().__init__()
            self.unet = UNet2DModel(**unet_config)
            dim = self.unet.config.block_out_channels[0] * 4
            self.diagnosis = torch.nn.Embedding(len(vocab["diagnoses"]) + 1, dim)
            self.sex = torch.nn.Embedding(len(vocab["sexes"]) + 1, dim)
            self.age = torch.nn.Embedding(len(vocab["age_bands"]) + 1, dim)
            for table in (self.diagnosis, self.sex, self.age):
                torch.nn.init.normal_(table.weight, std=0.02)

        def forward(self, x, t, cond):
            emb = self.diagnosis(cond[:, 0]) + self.sex(cond[:, 1]) + self.age(cond[:, 2])
            return self.unet(x, t, class_labels=emb).sample

    return BreathDiffusionNet()


def encode_conditions(conds: Sequence[Conditions], vocab: dict) -> np.ndarray:
    """Conditions -> int ``[N, 3]`` indices (diagnosis, sex, age band); unknown = the table's last row."""
    lists = (vocab["diagnoses"], vocab["sexes"], vocab["age_bands"])
    out = np.zeros((len(conds), 3), dtype=np.int64)
    for i, c in enumerate(conds):
        for j, (value, names) in enumerate(zip((c.diagnosis, c.sex, c.age_band), lists)):
            out[i, j] = names.index(value) if value in names else len(names)
    return out


class BreathDiffusion:
    """The ``breath-diffusion`` generator: ``generate(prompt, seconds, n)`` -> 4 kHz recordings."""

    plugin_name = PLUGIN

    def __init__(self, model: str | os.PathLike | None = None, *, device: str | None = None):
        from steth_hub.generation import resolve_generator_folder

        self.path = resolve_generator_folder(model, PLUGIN)
        self.device = device or "cpu"
        self.config = _read_config(self.path)
        self._net = None

    # ------------------------------------------------------------------ loading
    @property
    def net(self):
        if self._net is None:
            self._net = load_net(self.path, self.config, self.device)
        return self._net

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path)

    @property
    def sample_rate(self) -> int:
        return int(self.config["spectral"]["sample_rate"])

    def seconds_range(self) -> tuple[float, float]:
        return MIN_SECONDS, MAX_SECONDS

    def settings(self, *, steps: int | None = None, guidance_scale: float | None = None) -> dict:
        s = dict(DEFAULT_SAMPLING, **(self.config.get("sampling") or {}))
        if steps is not None:
            s["steps"] = int(steps)
        if guidance_scale is not None:
            s["guidance_scale"] = float(guidance_scale)
        return s

    def conditions_of(self, prompt) -> Conditions:
        from steth_hub.generation.prompts import parse_prompt

        return prompt if isinstance(prompt, Conditions) else parse_prompt(prompt)

    # ------------------------------------------------------------------ sampling
    def generate(self, prompt, seconds: float = 5.0, n: int = 1, *, seed: int = 0, steps: int | None = None,
                 guidance_scale: float | None = None, batch_size: int = 16,
                 progress: Callable[[int], None] | None = None) -> list:
        """``n`` synthetic recordings (:class:`~steth_hub.audio.Recording`, 4 kHz) for a prompt
        sentence or :class:`Conditions`; the same seed gives the same audio."""
        from steth_hub.audio import Recording
        from steth_hub.generation.writer import check_seconds

        check_seconds(seconds, MIN_SECONDS, MAX_SECONDS, PLUGIN)
        cond = self.conditions_of(prompt)
        settings = self.settings(steps=steps, guidance_scale=guidance_scale)
        waves = sample(self.net, self.config, [cond] * int(n), seconds, seed=seed, steps=settings["steps"],
                       guidance_scale=settings["guidance_scale"], batch_size=batch_size, device=self.device,
                       progress=progress)
        return [Recording(samples=w, sample_rate=self.sample_rate, source=f"<{PLUGIN}>") for w in waves]


def _read_config(path: Path) -> dict:
    file = Path(path) / CONFIG_FILE
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the generator config: {exc}", path=file,
                         fix="point --model at a folder written by breath-diffusion training") from None
    if config.get("format") != FORMAT or config.get("plugin") != PLUGIN:
        raise ModelError(f"not a {PLUGIN} model (format {config.get('format')!r}, plugin {config.get('plugin')!r})",
                         path=file, fix="point --model at a folder written by breath-diffusion training")
    return config


def load_net(path, config: dict, device: str = "cpu"):
    from safetensors.torch import load_file

    net = _build_net(config["unet"], config["vocab"])
    file = Path(path) / WEIGHTS_FILE
    try:
        state = load_file(str(file))
    except Exception as exc:  # missing or damaged file
        raise ModelError(f"cannot read the generator weights: {type(exc).__name__}: {exc}", path=file,
                         fix="re-train or re-install the model folder") from None
    missing, unexpected = net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ModelError(f"weights do not match the config ({len(missing)} missing, {len(unexpected)} unexpected)",
                         path=file, fix="re-train the model; config.json and model.safetensors must come from one run")
    return net.to(device).eval()


def _frames_for(seconds: float, spectral) -> int:
    frames = spectral.frames(seconds)
    return int(math.ceil(frames / FRAME_MULTIPLE) * FRAME_MULTIPLE)


def sample(net, config: dict, conds: Sequence[Conditions], seconds: float, *, seed: int = 0, steps: int = 25,
           guidance_scale: float = 3.0, batch_size: int = 16, device: str = "cpu",
           progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Draw one waveform per condition (float32, ``seconds`` long, at the spectral rate)."""
    import torch
    from diffusers import DPMSolverMultistepScheduler

    from steth_hub.generation.spectral import LogMel, SpectralConfig

    spectral = SpectralConfig.from_dict(config["spectral"])
    logmel = LogMel(spectral)
    mean = torch.tensor(config["norm"]["mean"], dtype=torch.float32, device=device).view(1, 1, -1, 1)
    std = torch.tensor(config["norm"]["std"], dtype=torch.float32, device=device).view(1, 1, -1, 1)
    frames = _frames_for(seconds, spectral)
    n_samples = int(round(float(seconds) * spectral.sample_rate))
    codes = torch.from_numpy(encode_conditions(conds, config["vocab"])).to(device)
    null = torch.tensor([len(config["vocab"][k]) for k in ("diagnoses", "sexes", "age_bands")], device=device)
    scheduler = DPMSolverMultistepScheduler(**config["scheduler"], algorithm_type="dpmsolver++")
    out: list[np.ndarray] = []
    for start in range(0, len(conds), batch_size):
        stop = min(len(conds), start + batch_size)
        # one generator per clip, so clip i of a run is the same whatever the batch size
        gens = [torch.Generator().manual_seed(int(seed) * 100003 + i) for i in range(start, stop)]
        x = torch.stack([torch.randn(1, spectral.n_mels, frames, generator=g) for g in gens]).to(device)
        cond = codes[start:stop]
        both = torch.cat([cond, null.expand_as(cond)])
        scheduler.set_timesteps(int(steps))
        with torch.no_grad():
            for t in scheduler.timesteps:
                model_in = torch.cat([x, x])
                pred = net(model_in, t.expand(len(model_in)).to(device), both)
                c, u = pred.chunk(2)
                pred = u + float(guidance_scale) * (c - u)
                x = scheduler.step(pred, t, x).prev_sample
            spec = x * std + mean
        audio_gen = torch.Generator().manual_seed(int(seed) * 7919 + start)
        waves = logmel.decode(spec[:, 0].cpu(), generator=audio_gen)
        for w in waves:
            w = w[:n_samples]
            if len(w) < n_samples:
                w = np.pad(w, (0, n_samples - len(w)))
            out.append(w.astype(np.float32))
        if progress is not None:
            progress(stop - start)
    return out


# ---------------------------------------------------------------------- training
def train(waveforms: np.ndarray, sample_rate: int, conds: Sequence[Conditions], out_dir: str | os.PathLike, *,
          name: str = "breath-diffusion", training: dict | None = None, data_facts: dict | None = None,
          progress: bool | Callable[[str], None] = True, device: str = "cpu", unet: dict | None = None,
          init_from: str | os.PathLike | None = None) -> dict:
    """Train a ``breath-diffusion`` model on clips (float32 ``[N, S]`` at ``sample_rate``, one
    :class:`Conditions` each) and write it to ``out_dir`` (atomically). Returns the config written.

    Train it only on training patients when its clips feed an evaluation. ``unet`` overrides keys of
    the network's settings (:data:`DEFAULT_UNET`; tests use a narrower one).
    """
    import torch
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    from steth_hub.audio import resample
    from steth_hub.fileio import atomic_directory, atomic_write_json
    from steth_hub.generation.spectral import LogMel, SpectralConfig

    if len(waveforms) != len(conds) or len(conds) == 0:
        raise ConfigError(f"{len(waveforms)} clips and {len(conds)} conditions: need one condition per clip, "
                          "and at least one clip", fix="pass one Conditions per clip")
    say = progress if callable(progress) else ((lambda m: print(m, flush=True)) if progress else (lambda m: None))
    recipe = dict(DEFAULT_TRAINING, **(training or {}))
    spectral = SpectralConfig()
    logmel = LogMel(spectral)
    torch.manual_seed(int(recipe["seed"]))
    rng = np.random.default_rng(int(recipe["seed"]))
    audio = np.stack([resample(w, sample_rate, spectral.sample_rate) for w in waveforms])
    peak = np.abs(audio).max(axis=1, keepdims=True)
    audio = audio / np.maximum(peak, 1e-8)
    specs = logmel.encode(audio)  # [N, mels, frames]
    mean = specs.mean(dim=(0, 2))
    std = specs.std(dim=(0, 2)).clamp_min(1e-3)
    data = ((specs - mean.view(1, -1, 1)) / std.view(1, -1, 1)).unsqueeze(1).to(device)
    crop = int(recipe["crop_frames"])
    if data.shape[-1] < crop:
        raise ConfigError(f"clips of {data.shape[-1]} frames are shorter than the {crop}-frame training crop",
                          fix="train on clips of at least 5 s")
    vocab = _vocab()
    codes = torch.from_numpy(encode_conditions(conds, vocab)).to(device)
    null = torch.tensor([len(vocab[k]) for k in ("diagnoses", "sexes", "age_bands")], device=device)
    unet_config = dict(DEFAULT_UNET, **(unet or {}), sample_size=[spectral.n_mels, crop])
    net = _build_net(unet_config, vocab).to(device)
    if init_from is not None:  # continue from an earlier run's (EMA) weights, same architecture
        earlier = _read_config(Path(init_from))
        net.load_state_dict(load_net(init_from, earlier, device).state_dict())
        unet_config = earlier["unet"]
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    scheduler = DDPMScheduler(**DEFAULT_SCHEDULER)
    opt = torch.optim.AdamW(net.parameters(), lr=float(recipe["learning_rate"]),
                            weight_decay=float(recipe["weight_decay"]))
    steps, batch = int(recipe["steps"]), int(recipe["batch_size"])
    warmup = max(1, int(recipe["warmup_steps"]))
    lr_at = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps))  # noqa: E731
    sched_lr = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    started, losses = time.time(), []
    from tqdm.auto import tqdm

    bar = tqdm(range(steps), desc=f"train {name}", unit="step", disable=not progress or callable(progress))
    for step in bar:
        idx = torch.from_numpy(rng.integers(0, len(data), batch))
        offsets = rng.integers(0, data.shape[-1] - crop + 1, batch)
        x0 = torch.stack([data[i, :, :, o:o + crop] for i, o in zip(idx.tolist(), offsets)])
        cond = codes[idx].clone()
        drop_each = torch.rand(cond.shape, device=device) < float(recipe["p_drop_each"])
        drop_all = (torch.rand(len(cond), 1, device=device) < float(recipe["p_drop_all"])).expand_as(cond)
        cond = torch.where(drop_each | drop_all, null.expand_as(cond), cond)
        noise = torch.randn_like(x0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=device)
        noisy = scheduler.add_noise(x0, noise, t)
        target = scheduler.get_velocity(x0, noise, t)
        loss = torch.nn.functional.mse_loss(net(noisy, t, cond), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched_lr.step()
        decay = min(float(recipe["ema_decay"]), (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in net.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    ema[k].copy_(v)
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            recent = float(np.mean(losses[-50:]))
            bar.set_postfix(loss=f"{recent:.3f}")
            if callable(progress):
                say(f"step {step + 1}/{steps} loss {recent:.4f}")
    seconds = time.time() - started
    config = {
        "format": FORMAT, "plugin": PLUGIN, "name": name,
        "unet": unet_config, "vocab": vocab, "spectral": spectral.to_dict(),
        "norm": {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]},
        "scheduler": dict(DEFAULT_SCHEDULER), "sampling": dict(DEFAULT_SAMPLING),
        "training": {**recipe, "n_clips": int(len(data)), "seconds": round(seconds, 1),
                     "continued_from": None if init_from is None else os.fspath(init_from),
                     "device": device, "torch_threads": torch.get_num_threads(),
                     "loss_first_50": round(float(np.mean(losses[:50])), 4),
                     "loss_last_50": round(float(np.mean(losses[-50:])), 4),
                     "loss_per_tenth": [round(float(np.mean(part)), 4)
                                        for part in np.array_split(np.asarray(losses), min(10, len(losses)))],
                     **(data_facts or {})},
        "parameters": int(sum(p.numel() for p in net.parameters())),
    }
    with atomic_directory(out_dir) as tmp:
        save_file({k: v.detach().float().contiguous().cpu() for k, v in ema.items()}, str(tmp / WEIGHTS_FILE))
        os.chmod(tmp / WEIGHTS_FILE, 0o644)
        atomic_write_json(tmp / CONFIG_FILE, config)
    say(f"trained {name}: {steps} steps on {len(data)} clips in {seconds / 60:.1f} min, "
        f"loss {config['training']['loss_first_50']} -> {config['training']['loss_last_50']}")
    return config
