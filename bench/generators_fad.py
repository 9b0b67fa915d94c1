"""Frechet Audio Distance of synthetic clips, per class, with a real-vs-real reference.

    .venv/bin/python bench/generators_fad.py --corpus CORPUS --work runs/generators-fad [--model steth/breath-diffusion]

Per class (asthma, normal): the real clips' patients are split at random into two disjoint halves
A and B (seeded; no patient in both). Reported, in the frozen AudioSet mn04 embedding
(:mod:`steth_hub.generation.fad`):

* real A vs real B: the floor - what two real samples of the class differ by;
* real A vs synthetic: as many synthetic clips as B holds, each conditioned on the sex and age of
  one of B's clips (same sizes as the floor, since FAD grows as sets shrink);
* real A vs the other class's real clips: the scale - what a real change of diagnosis costs.

Writes ``WORK/fad.json`` and ``WORK/fad.md``; synthetic clips are cached in ``WORK/synthetic-<class>``.
The shipped generator was trained on every shared patient (both halves).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLASSES = ("asthma", "normal")


def generate_like(gen, conds, sample_rate: int, seed: int, cache: Path):
    """One synthetic clip per condition, resampled to ``sample_rate`` and peak-normalised (cached)."""
    from steth_builtin.generators_diffusion import sample
    from steth_hub.audio import resample
    from steth_hub.clips import ClipSet
    from steth_hub.generation.data import synthetic_clipset

    if (cache / "clips.json").is_file():
        synth = ClipSet.load(cache)
        if len(synth) == len(conds):
            return synth
    s = gen.settings()
    waves = sample(gen.net, gen.config, conds, 5.0, seed=seed, steps=s["steps"], guidance_scale=s["guidance_scale"],
                   batch_size=32)
    up = np.stack([resample(w, gen.sample_rate, sample_rate) for w in waves])
    up = up / np.maximum(np.abs(up).max(axis=1, keepdims=True), 1e-8)
    label = int(conds[0].diagnosis == "asthma")
    synth = synthetic_clipset(up, sample_rate, label, tag=cache.name, meta={"generator": gen.name})
    synth.save(cache)
    return synth


def run(args) -> dict:
    from steth_hub.generation import load_generator
    from steth_hub.generation.data import corpus_clips
    from steth_hub.generation.fad import MN04Embedder, frechet_distance, patient_halves, stack
    from steth_hub.generation.prompts import Conditions

    work = Path(args.work)
    clips, conds, _ = corpus_clips(args.corpus)
    gen = load_generator(args.model)
    embedder = MN04Embedder(args.encoder)
    t0 = time.time()
    real = embedder.frames(clips.waveforms, clips.sample_rate)
    print(f"embedded {len(real)} real clips in {time.time() - t0:.0f} s", flush=True)
    diag = np.array([c.diagnosis for c in conds], dtype=object)
    halves = {}
    for cls in CLASSES:
        mask = diag == cls
        a, b = patient_halves(clips.patient_ids[mask], seed=args.seed)
        idx = np.flatnonzero(mask)
        halves[cls] = (idx[a], idx[b])
    rows = {}
    for cls in CLASSES:
        a_idx, b_idx = halves[cls]
        b_conds = [Conditions(cls, conds[i].sex, conds[i].age) for i in b_idx]
        t0 = time.time()
        synth = generate_like(gen, b_conds, clips.sample_rate, args.seed + CLASSES.index(cls), work / f"synthetic-{cls}")
        print(f"{cls}: {len(synth)} synthetic clips ({time.time() - t0:.0f} s)", flush=True)
        synth_frames = embedder.frames(synth.waveforms, synth.sample_rate)
        ref = stack([real[i] for i in a_idx])
        other = [c for c in CLASSES if c != cls][0]
        other_b = halves[other][1]
        rows[cls] = {
            "real_A_vs_real_B": frechet_distance(ref, stack([real[i] for i in b_idx])),
            "real_A_vs_synthetic": frechet_distance(ref, stack(synth_frames)),
            f"real_A_vs_real_{other}_B": frechet_distance(ref, stack([real[i] for i in other_b])),
            "clips_A": int(len(a_idx)), "clips_B": int(len(b_idx)), "clips_synthetic": int(len(synth)),
            "patients_A": int(len(set(clips.patient_ids[a_idx]))), "patients_B": int(len(set(clips.patient_ids[b_idx]))),
        }
        assert not set(clips.patient_ids[a_idx]) & set(clips.patient_ids[b_idx])
    report = {"generator": gen.name, "encoder": embedder.weights, "embedding": "mn04 last feature map, mean over "
              "frequency, one 384-d vector per time step", "split": f"patients, seed {args.seed}", "classes": rows,
              "settings": gen.settings()}
    from steth_hub.fileio import atomic_write_json, atomic_write_text

    atomic_write_json(work / "fad.json", report)
    atomic_write_text(work / "fad.md", table(report))
    print(table(report))
    return report


def table(report: dict) -> str:
    lines = ["| class | real A vs real B (floor) | real A vs synthetic | real A vs the other class (scale) | clips A / B / synthetic (patients A / B) |",
             "|---|---|---|---|---|"]
    for cls, r in report["classes"].items():
        other = [k for k in r if k.startswith("real_A_vs_real_") and k != "real_A_vs_real_B"][0]
        lines.append(f"| {cls} | {r['real_A_vs_real_B']:.2f} | {r['real_A_vs_synthetic']:.2f} | {r[other]:.2f} "
                     f"({other.split('_')[4]}) | {r['clips_A']} / {r['clips_B']} / {r['clips_synthetic']} "
                     f"({r['patients_A']} / {r['patients_B']}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", default="runs/generators-fad")
    ap.add_argument("--model", default=None, help="generator (default: the shipped steth/breath-diffusion)")
    ap.add_argument("--encoder", default=None, help="mn04 model.safetensors (default ../shared/models/...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
