"""Does synthesis help? Synthetic asthma clips added to training, inside patient-grouped CV.

    .venv/bin/python bench/generators_augment.py --corpus CORPUS --work runs/generators-augment

For each of the corpus's patient folds (``splits.json``, the folds every `steth evaluate` run uses):

1. the held-out patients are fold k; the others are split into training and validation patients
   exactly as :func:`steth_hub.evaluate.cross_validate_clips` does (``validation_split``, 20 %,
   seed + k);
2. a ``breath-diffusion`` generator is trained on **the training patients' clips only** (never
   the validation or held-out patients');
3. it draws synthetic asthma clips, each with the sex and age of a real training asthma clip
   (drawn at random), at 4 kHz, then resampled to the classifier's 16 kHz and peak-normalised like
   the real clips; every synthetic clip has its own ``synthetic:...`` patient id;
4. the classifier (``mfcc-logreg`` by default) is trained on the real training clips plus
   0, 25, 50 or 100 % as many synthetic asthma clips as there are real asthma training clips; its
   threshold comes from the validation patients (real only);
5. the held-out patients' real clips are scored. No synthetic clip is ever scored.

Out-of-fold probabilities are pooled and scored per patient (mean of recordings, mean of clips),
with 95 % patient-bootstrap intervals, pooled and within KAUH. Writes ``WORK/augment.json`` and
``WORK/augment.md`` (``augment-<name>.*`` for ``--config``, e.g. ``configs/efficientat-probe.yaml``). Generators are kept in ``WORK/generators/fold-K`` (reused on a re-run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATIOS = (0.0, 0.25, 0.5, 1.0)


def fold_patients(clips, folds, k: int, seed: int = 0, fraction: float = 0.2):
    from steth_hub.evaluate import patient_labels, validation_split

    labels = patient_labels(clips)
    folds = {p: f for p, f in folds.items() if p in labels}
    test = sorted(p for p, f in folds.items() if f == k)
    rest = sorted(p for p, f in folds.items() if f != k)
    train, valid = validation_split(rest, labels, fraction, seed + int(k))
    return train, valid, test


def train_fold_generators(clips, conds, folds, work: Path, steps: int, seed: int, batch_size: int) -> None:
    from steth_builtin.generators_diffusion import train

    for k in sorted(set(folds.values())):
        out = work / "generators" / f"fold-{k}"
        if (out / "config.json").is_file():
            print(f"fold {k}: generator exists, kept ({out})", flush=True)
            continue
        train_p, valid_p, test_p = fold_patients(clips, folds, k, seed)
        mask = np.isin(clips.patient_ids.astype(str), train_p)
        assert not set(clips.patient_ids[mask].astype(str)) & (set(valid_p) | set(test_p))
        print(f"fold {k}: training a generator on {len(train_p)} training patients ({int(mask.sum())} clips)",
              flush=True)
        train(clips.waveforms[mask], clips.sample_rate, [c for c, m in zip(conds, mask) if m], out,
              name=f"breath-diffusion fold {k}", training={"steps": steps, "seed": seed + k, "batch_size": batch_size},
              data_facts={"fold": k, "train_patients": train_p}, progress=lambda m: print(f"  fold {k}: {m}", flush=True)
              if m.startswith("step") and int(m.split()[1].split("/")[0]) % 100 == 1 else None)


def synthetic_for_fold(generator_dir: Path, train_conds, n: int, sample_rate: int, seed: int, cache: Path):
    """``n`` synthetic asthma clips at ``sample_rate`` (cached as a ClipSet in ``cache``)."""
    from steth_builtin.generators_diffusion import BreathDiffusion
    from steth_hub.audio import resample
    from steth_hub.clips import ClipSet
    from steth_hub.generation.data import synthetic_clipset
    from steth_hub.generation.prompts import Conditions

    if (cache / "clips.json").is_file():
        synth = ClipSet.load(cache)
        if len(synth) >= n:
            return synth.subset(np.arange(n))
    gen = BreathDiffusion(generator_dir)
    rng = np.random.default_rng(seed)
    asthma = [c for c in train_conds if c.diagnosis == "asthma"]
    picks = [asthma[i] for i in rng.integers(0, len(asthma), n)]
    conds = [Conditions("asthma", c.sex, c.age) for c in picks]
    from steth_builtin.generators_diffusion import sample

    waves = sample(gen.net, gen.config, conds, 5.0, seed=seed, steps=gen.settings()["steps"],
                   guidance_scale=gen.settings()["guidance_scale"], batch_size=32)
    up = np.stack([resample(w, gen.sample_rate, sample_rate) for w in waves])
    up = up / np.maximum(np.abs(up).max(axis=1, keepdims=True), 1e-8)
    synth = synthetic_clipset(up, sample_rate, 1, tag=f"{generator_dir.name}",
                              meta={"generator": str(generator_dir)})
    synth.save(cache)
    return synth


def run(args) -> dict:
    from steth_hub import metrics
    from steth_hub.clips import ClipSet
    from steth_hub.corpus import load_corpus
    from steth_hub.evaluate import corpus_folds, level_tables
    from steth_hub.generation.data import corpus_clips, is_synthetic
    from steth_hub.registry import get_registry

    work = Path(args.work)
    corpus = load_corpus(args.corpus)
    clips, conds, facts = corpus_clips(corpus)
    folds = corpus_folds(corpus)
    if args.phase in ("generators", "all"):
        train_fold_generators(clips, conds, folds, work, args.steps, args.seed, args.batch_size)
    if args.phase == "generators":
        return {}
    model_config, recipe, name = {}, {}, args.classifier
    if args.config:  # an experiment config (configs/efficientat-probe.yaml): its classifier, model and recipe
        from steth_hub.experiment import load_experiment

        exp = load_experiment(args.config)
        args.classifier, model_config, recipe, name = exp.classifier, dict(exp.model), dict(exp.recipe), exp.name
    cls = get_registry().get("classifier", args.classifier).load()
    fold_ids = sorted({folds[p] for p in set(clips.patient_ids.astype(str))})
    oof = {r: np.full(len(clips), np.nan) for r in RATIOS}
    thr = {r: np.full(len(clips), np.nan) for r in RATIOS}
    clip_folds = np.array([folds[str(p)] for p in clips.patient_ids], dtype=np.int64)
    per_fold = []
    synthetic_scored = 0  # synthetic clips among the validation and held-out clips (must stay 0)
    for k in fold_ids:
        train_p, valid_p, test_p = fold_patients(clips, folds, k, args.seed)
        train, valid = clips.for_patients(train_p), clips.for_patients(valid_p)
        train_conds = [c for c, p in zip(conds, clips.patient_ids.astype(str)) if p in set(train_p)]
        n_asthma = int((train.labels == 1).sum())
        n_max = int(round(max(RATIOS) * n_asthma))
        t0 = time.time()
        synth = synthetic_for_fold(work / "generators" / f"fold-{k}", train_conds, n_max, clips.sample_rate,
                                   args.seed * 1000 + k, work / "synthetic" / f"fold-{k}")
        print(f"fold {k}: {len(synth)} synthetic asthma clips ({time.time() - t0:.0f} s); "
              f"{len(train)} real training clips ({n_asthma} asthma)", flush=True)
        scored = clip_folds == k
        test = clips.subset(scored)
        synthetic_scored += int(is_synthetic(test.patient_ids).sum() + is_synthetic(valid.patient_ids).sum())
        assert synthetic_scored == 0, "a synthetic clip reached the scored or validation clips"
        row = {"fold": int(k), "train_patients": len(train_p), "real_asthma_clips": n_asthma}
        for r in RATIOS:
            m = int(round(r * n_asthma))
            fit_set = ClipSet.concatenate([train, synth.subset(np.arange(m))]) if m else train
            model = cls.from_config(dict(model_config))
            model.fit(fit_set, valid, dict(recipe), work / "fits" / name / f"fold-{k}-{r:g}")
            t = metrics.recording_threshold(valid.labels, model.predict_proba(valid.waveforms), valid.recording_ids)
            oof[r][scored] = model.predict_proba(test.waveforms)
            thr[r][scored] = t
            row[f"synthetic@{r:g}"] = m
        per_fold.append(row)
    sources = np.array([str((facts.get(str(rid)) or {}).get("source") or str(p).split(":")[0])
                        for rid, p in zip(clips.recording_ids, clips.patient_ids)], dtype=object)
    results = {}
    for r in RATIOS:
        tables = level_tables(clips.recording_ids, clips.patient_ids.astype(str), clips.labels, clip_folds,
                              oof[r], thr[r])
        pat = tables["patient"]
        pat_source = {str(p): s for p, s in zip(clips.patient_ids.astype(str), sources)}
        kauh = np.array([pat_source[str(p)] == "kauh" for p in pat["ids"]])
        res = {}
        for subset, mask in (("pooled", np.ones(len(kauh), bool)), ("kauh", kauh)):
            ci = metrics.bootstrap_ci(pat["labels"][mask], pat["prob"][mask], pat["threshold"][mask],
                                      groups=pat["patients"][mask], n=args.bootstrap, seed=0)
            res[subset] = {"auroc": ci["auroc"], "sensitivity": ci["sensitivity"], "specificity": ci["specificity"],
                         "n_patients": ci["n_groups"], "n_asthma": ci["n_pos"]}
        results[f"{r:g}"] = res
    report = {"classifier": name, "config": args.config, "generator": "breath-diffusion (one per fold, training patients only)",
              "generator_steps": args.steps, "ratios": list(RATIOS), "folds": "corpus splits.json",
              "per_fold": per_fold, "results": results, "bootstrap": args.bootstrap,
              "synthetic_scored": synthetic_scored}
    from steth_hub.fileio import atomic_write_json, atomic_write_text

    stem = "augment" if name == "mfcc-logreg" else f"augment-{name}"
    atomic_write_json(work / f"{stem}.json", report)
    atomic_write_text(work / f"{stem}.md", table(report))
    print(table(report))
    return report


def _ci(m) -> str:
    if m["value"] is None:
        return "n/a"
    lo, hi = m["low"], m["high"]
    return f"{m['value']:.2f} [{lo:.2f}, {hi:.2f}]" if lo is not None else f"{m['value']:.2f}"


def table(report: dict) -> str:
    lines = ["| synthetic asthma clips added | AUROC within KAUH | AUROC pooled | sensitivity (pooled) | specificity (pooled) |",
             "|---|---|---|---|---|"]
    for r, res in report["results"].items():
        share = f"{float(r) * 100:.0f}% of the real asthma clips"
        k, p = res["kauh"], res["pooled"]
        lines.append(f"| {share} | {_ci(k['auroc'])} | {_ci(p['auroc'])} | {_ci(p['sensitivity'])} | "
                     f"{_ci(p['specificity'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", default="runs/generators-augment")
    ap.add_argument("--classifier", default="mfcc-logreg")
    ap.add_argument("--config", default=None,
                    help="experiment config of the classifier instead (e.g. configs/efficientat-probe.yaml)")
    ap.add_argument("--steps", type=int, default=250, help="training steps of each fold's generator")
    ap.add_argument("--batch-size", type=int, default=16, help="training batch of each fold's generator")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--phase", choices=("generators", "evaluate", "all"), default="all")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
