"""What ``steth generate`` does, as a function: check every input first, generate, check, write once.

Order matters for a user's time and files: the prompt or patient facts, ``--n``, ``--seconds``,
``--out`` and the model are checked before anything is generated, so a typo costs a second,
not minutes; the output folder is written at the end, whole (never half-written).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

from steth_hub.errors import ConfigError

MAX_CLIPS = 1000


@dataclass
class GenerateRequest:
    out: str
    prompt: str | None = None
    diagnosis: str | None = None
    sex: str | None = None
    age: float | str | None = None
    seconds: float | str = 5.0
    n: int = 4
    seed: int = 0
    model: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    check: bool = False
    classifier: str | None = None
    keep_threshold: float | None = None
    overwrite: bool = False
    progress: bool = True
    config: str | None = None


CONFIG_KEYS = {"generator", "model", "paper", "sampling"}


def apply_config(req: GenerateRequest) -> GenerateRequest:
    """Fill ``model``, ``steps`` and ``guidance_scale`` from a generator config (``configs/generators/*.yaml``)
    where the command line left them out."""
    if req.config is None:
        return req
    from dataclasses import replace

    from steth_hub.fileio import read_yaml_or_json

    try:
        data = read_yaml_or_json(req.config, what="generator config")
    except OSError as exc:
        raise ConfigError(f"cannot read the generator config: {exc.strerror or exc}", path=req.config,
                          fix="give --config a file such as configs/generators/stable-audio-asthma.yaml") from None
    if not isinstance(data, dict) or set(data) - CONFIG_KEYS:
        extra = sorted(set(data) - CONFIG_KEYS) if isinstance(data, dict) else data
        raise ConfigError(f"not a generator config (unexpected {extra!r})", path=req.config,
                          fix=f"use only the keys {', '.join(sorted(CONFIG_KEYS))}")
    sampling = data.get("sampling") or {}
    guidance = req.guidance_scale
    if guidance is None and sampling.get("guidance_scale") is not None:
        guidance = sampling["guidance_scale"]
        if isinstance(guidance, (list, tuple)):
            raise ConfigError(f"the config sweeps guidance_scale {list(guidance)}", path=req.config,
                              fix=f"pick one with --guidance (one of {', '.join(str(g) for g in guidance)})")
    steps = req.steps if req.steps is not None else sampling.get("steps")
    model = req.model if req.model is not None else data.get("model")
    return replace(req, model=model, steps=None if steps is None else int(steps),
                   guidance_scale=None if guidance is None else float(guidance))


def _conditions_and_prompt(req: GenerateRequest):
    from steth_hub.generation.prompts import build_prompt, conditions

    if req.prompt is not None and req.diagnosis is not None:
        raise ConfigError("both --prompt and --diagnosis were given", fix="give one: --prompt TEXT or --diagnosis D")
    if req.prompt is None and req.diagnosis is None:
        if req.sex is not None or req.age is not None:
            raise ConfigError("--sex/--age need --diagnosis", fix="add --diagnosis asthma (or normal, copd...)")
        raise ConfigError("nothing to generate: no --prompt and no --diagnosis",
                          fix="give --prompt 'Breath sample from F-8yo diagnosed with bronchial asthma' "
                              "or --diagnosis asthma --sex F --age 8")
    if req.prompt is not None:
        if req.sex is not None or req.age is not None:
            raise ConfigError("--sex/--age go with --diagnosis, not --prompt",
                              fix="write them into the prompt ('F-8yo'), or use --diagnosis")
        return None, req.prompt
    cond = conditions(req.diagnosis, req.sex, req.age)
    return cond, build_prompt(cond)


def run_generate(req: GenerateRequest, *, echo: Callable[[str], None] = print, generator=None) -> dict:
    """Generate, optionally check, and write ``req.out``; returns the sidecar written (plus counts)."""
    from steth_hub.generation import DEFAULT_GENERATOR, load_generator
    from steth_hub.generation.writer import check_output, clip_file, write_generation

    req = apply_config(req)
    cond, prompt = _conditions_and_prompt(req)
    if isinstance(req.n, bool) or not isinstance(req.n, int) or not 1 <= req.n <= MAX_CLIPS:
        raise ConfigError(f"--n {req.n!r} is not a number of clips between 1 and {MAX_CLIPS}",
                          fix="give --n 1 or more (e.g. --n 8)")
    try:
        seconds = float(req.seconds)
    except (TypeError, ValueError):
        raise ConfigError(f"--seconds {req.seconds!r} is not a number", fix="give --seconds 5 (seconds per clip)") \
            from None
    if req.steps is not None and not 1 <= int(req.steps) <= 1000:
        raise ConfigError(f"--steps {req.steps} is outside 1-1000", fix="give --steps 25 (or leave it out)")
    if req.guidance_scale is not None and not 0.0 <= float(req.guidance_scale) <= 50.0:
        raise ConfigError(f"--guidance {req.guidance_scale} is outside 0-50", fix="give --guidance 3 (or leave it out)")
    if req.keep_threshold is not None and not req.check:
        raise ConfigError("--keep-threshold needs --check", fix="add --check, or leave --keep-threshold out")
    if req.classifier is not None and not req.check:
        raise ConfigError("--classifier needs --check", fix="add --check, or leave --classifier out")
    if req.keep_threshold is not None and not 0.0 <= float(req.keep_threshold) <= 1.0:
        raise ConfigError(f"--keep-threshold {req.keep_threshold} is outside 0-1",
                          fix="give a probability between 0 and 1, or leave it out (the classifier's own threshold)")
    gen = generator if generator is not None else load_generator(req.model)
    inputs = [getattr(gen, "path", None)]
    check_output(req.out, inputs=inputs, overwrite=req.overwrite)
    asked = gen.conditions_of(cond if cond is not None else prompt)  # the generator's reading; errors here
    classifier = None
    if req.check:
        from steth_hub.generation.check import DEFAULT_CHECK_MODEL

        if asked is None or asked.label is None:
            raise ConfigError(f"--check needs to know the prompted diagnosis, and the prompt {prompt!r} names none",
                              fix="name a diagnosis in the prompt (e.g. 'bronchial asthma'), or use --diagnosis")
        import steth_hub

        classifier = steth_hub.from_pretrained(req.classifier or DEFAULT_CHECK_MODEL)
    # seconds are checked against the generator's own range inside generate(); check them now too
    from steth_hub.generation.writer import check_seconds

    limits = getattr(gen, "seconds_range", None)
    if limits is not None:
        check_seconds(req.seconds, *limits(), getattr(gen, "plugin_name", "generator"))

    from tqdm.auto import tqdm

    started = time.time()
    bar = tqdm(total=int(req.n), desc="generate", unit="clip", disable=not req.progress)
    recordings = gen.generate(cond if cond is not None else prompt, seconds, int(req.n), seed=int(req.seed),
                              steps=req.steps, guidance_scale=req.guidance_scale, progress=bar.update)
    bar.close()
    gen_seconds = time.time() - started
    clips = [{"index": i, "seed": f"{int(req.seed)}/{i}", "sample_rate": int(r.sample_rate),
              "seconds": round(len(r.samples) / r.sample_rate, 4)} for i, r in enumerate(recordings)]
    check_report = None
    if classifier is not None:
        from steth_hub.generation.check import check_clips

        result = check_clips(recordings, classifier, asked.label, req.keep_threshold)
        for info, p, ok in zip(clips, result.probabilities, result.as_prompted):
            info["p_asthma"] = round(float(p), 6)
            info["kept"] = bool(ok)
        check_report = {"classifier": req.classifier or DEFAULT_CHECK_MODEL,
                        "classifier_threshold": float(classifier.threshold), "threshold": result.threshold,
                        "prompted": "asthma" if asked.label == 1 else "not asthma",
                        "share_classified_as_prompted": result.share,
                        "kept": int(result.as_prompted.sum()), "rejected": int((~result.as_prompted).sum()),
                        "rule": "asthma prompt: kept when P(asthma) >= threshold; other prompts: when P(asthma) < "
                                "threshold"}
        echo(result.summary(check_report["classifier"]))
    for info in clips:
        info["file"] = clip_file(info["index"], info.get("kept", True))
    sidecar = {
        "prompt": prompt,
        "conditions": asked.to_dict() if asked is not None else None,
        "seed": int(req.seed),
        "n": int(req.n),
        "seconds": seconds,
        "model": {"plugin": getattr(gen, "plugin_name", None), "name": gen.name,
                  "path": str(gen.path) if getattr(gen, "path", None) else None,
                  "default": req.model is None and DEFAULT_GENERATOR},
        "settings": gen.settings(steps=req.steps, guidance_scale=req.guidance_scale),
        "generation_seconds": round(gen_seconds, 2),
        "check": check_report,
        "synthetic": True,
        "note": "Synthetic audio from a generative model: not a patient, not for diagnosis.",
        "request": {k: v for k, v in asdict(req).items() if k not in ("progress",)},
    }
    write_generation(req.out, recordings, sidecar, clips)
    kept = sum(1 for c in clips if c.get("kept", True))
    return {**sidecar, "clips": clips, "kept": kept, "rejected": len(clips) - kept}
