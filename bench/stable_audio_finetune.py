"""Fine-tune Stable Audio Open's DiT on a corpus's clips with prompts built from patient facts.

    .venv/bin/python bench/stable_audio_finetune.py --corpus CORPUS --out runs/stable-audio-asthma \
        [--config configs/generators/stable-audio-finetune.yaml] [--diagnosis asthma] [--model FOLDER_OR_REPO]

The paper fine-tunes one model on asthma clips and one on healthy clips (``--diagnosis asthma`` /
``--diagnosis normal``); without ``--diagnosis`` every clip is used, each prompted with its own
diagnosis. The base model comes from ``--model`` or the config's ``base_model``, read from local
files only (Stable Audio Open is gated: download it on a machine with network first). The DiT trains;
the autoencoder, the T5 text encoder and the projection stay frozen
(:func:`steth_builtin.generators_stable_audio.finetune`). Needs a GPU for the real model; used in
an evaluation, pass only the fold's training patients (``--patients FILE``, one id per line).
The output folder is a StableAudioPipeline: ``steth generate --model OUT`` (or the
``configs/generators/stable-audio-asthma.yaml`` / ``-healthy.yaml`` settings) loads it.
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
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "generators"
                                            / "stable-audio-finetune.yaml"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--diagnosis", default=None)
    ap.add_argument("--patients", default=None, help="file with the patient ids to train on (one per line)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)

    import numpy as np

    from steth_builtin.generators_stable_audio import finetune
    from steth_hub.fileio import read_yaml_or_json
    from steth_hub.generation.data import corpus_clips
    from steth_hub.generation.prompts import build_prompt, normalise_diagnosis

    config = read_yaml_or_json(args.config, what="fine-tuning config")
    clips, conds, _ = corpus_clips(args.corpus, config.get("preset", "excerpt-10s"))
    keep = np.ones(len(clips), dtype=bool)
    if args.diagnosis:
        want = normalise_diagnosis(args.diagnosis)
        keep &= np.array([c.diagnosis == want for c in conds])
    if args.patients:
        wanted = {line.strip() for line in Path(args.patients).read_text().splitlines() if line.strip()}
        keep &= np.isin(clips.patient_ids.astype(str), sorted(wanted))
    prompts = [build_prompt(c) for c, k in zip(conds, keep) if k]
    recipe = dict(config.get("recipe") or {})
    if args.steps:
        recipe["steps"] = args.steps
    print(f"fine-tuning on {int(keep.sum())} clips of {len(set(clips.patient_ids[keep]))} patients; "
          f"e.g. {prompts[0]!r}", flush=True)
    facts = finetune(args.model or config.get("base_model"), clips.waveforms[keep], clips.sample_rate, prompts,
                     args.out, recipe=recipe, device=args.device)
    print(facts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
