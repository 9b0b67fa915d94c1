"""Train the shipped ``breath-diffusion`` generator on every patient of a corpus (CPU is enough).

    .venv/bin/python bench/train_breath_diffusion.py --corpus CORPUS --out runs/breath-diffusion [--steps 1500]

CORPUS is the merged KAUH + ICBHI corpus of the shared recordings (``steth corpus import`` /
``merge``, as in configs/reproduce_efficientat_asthma.sh). The shipped copy in
``steth_hub/models/breath-diffusion/`` is this run's ``config.json`` + ``model.safetensors`` with
its card (README.md) beside them. Used inside an evaluation, a generator is trained on the
fold's training patients only: see bench/generators_augment.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--continue-from", default=None, help="an earlier run's folder: start from its weights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="steth/breath-diffusion")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from steth_builtin.generators_diffusion import train
    from steth_hub.generation.data import corpus_clips

    clips, conds, facts = corpus_clips(args.corpus)
    training = {"seed": args.seed}
    if args.steps:
        training["steps"] = args.steps
    if args.batch_size:
        training["batch_size"] = args.batch_size
    patients = sorted(set(clips.patient_ids.astype(str)))
    data_facts = {"corpus": str(args.corpus), "preset": "excerpt-10s", "n_patients": len(patients),
                  "n_recordings": len(set(clips.recording_ids.astype(str))),
                  "diagnoses": {d: sum(1 for c in conds if c.diagnosis == d) for d in sorted({c.diagnosis for c in conds if c.diagnosis})}}
    train(clips.waveforms, clips.sample_rate, conds, args.out, name=args.name, training=training,
          data_facts=data_facts, progress=True, init_from=args.continue_from)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
