"""Training throughput (clips per second) of the default recipe, against inference in the same run.

    .venv/bin/python bench/bench_train.py [--config configs/ast-asthma.yaml] [--clips 96] [--steps 12] [--threads N] [--out result.json]

Real clips (the shared recordings cut by the recipe's preset, or the shipped examples with a
note) train the config's model with its recipe (augmentation, class weights, AdamW, cosine
schedule) for ``--steps`` optimiser steps through :func:`steth_hub.train.fit_torch`, on CPU
unless CUDA is present. The baseline is the same model's inference (``predict_proba`` on
cached features) over the same clips in the same process; the report gives both in clips per
second and their ratio. Featurising (once per fit) is timed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from recordings import recording_files  # bench/recordings.py (scripts run from bench/)

REPO = Path(__file__).resolve().parents[1]


def real_clips(limit: int, preset):
    from steth_hub.clips import ClipSet
    from steth_hub.errors import AudioError, RecordingRejected
    from steth_hub.preprocess import Preprocessor

    files, source = recording_files("kauh/*.wav")
    pre = Preprocessor(preset)
    sets = []
    for path in np.random.default_rng(0).permutation(files):
        try:
            clips = pre.run(path, Path(path).stem)
        except (AudioError, RecordingRejected):
            continue
        label = int("asthma" in Path(path).name.lower())
        sets.append(ClipSet.from_clips(clips, [label] * len(clips), [Path(path).stem] * len(clips)))
        if sum(len(s) for s in sets) >= limit:
            break
    clips = ClipSet.concatenate(sets)
    return clips.subset(np.arange(min(limit, len(clips)))), source


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "ast-asthma.yaml"))
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from steth_hub.experiment import load_experiment
    from steth_hub.registry import get_registry
    from steth_hub.feature_cache import featurise_clipset

    if args.threads:
        torch.set_num_threads(args.threads)
    exp = load_experiment(args.config)
    clips, source = real_clips(args.clips, exp.preset)
    cls = get_registry().get("classifier", exp.classifier).load()
    model = cls.from_config(dict(exp.model))
    start = time.perf_counter()
    featurise_clipset(model, clips)  # fills the feature cache: the fit and the baseline reuse it
    featurise = time.perf_counter() - start
    recipe = dict(exp.recipe, max_steps=args.steps, save_steps=10**6, disable_tqdm=True, logging_steps=args.steps)
    recipe.pop("early_stopping_patience", None)
    with tempfile.TemporaryDirectory() as tmp:
        history = model.fit(clips, None, recipe, tmp)
    start = time.perf_counter()
    model.predict_proba(clips.waveforms)
    infer = len(clips) / (time.perf_counter() - start)
    report = {
        "config": args.config, "source": source, "clips": len(clips), "steps": history["global_step"],
        "device": history["device"], "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "train_clips_per_s": history["clips_per_second"], "inference_clips_per_s": infer,
        # the recipe's self-supervised warm start (pretrain.epochs over the same clips), when it has one
        "pretrain_epochs": (history.get("pretrain") or {}).get("epochs"),
        "pretrain_clips_per_s": (history.get("pretrain") or {}).get("clips_per_second"),
        "train_to_inference_ratio": history["clips_per_second"] / infer,
        "featurise_clips_per_s": len(clips) / featurise,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
