"""The listening check: synthetic clips next to real ones, with their spectrograms, for docs/generators.md.

    .venv/bin/python bench/generators_listen.py --out docs/generators [--model steth/breath-diffusion]

Real: the KAUH asthma and normal example recordings shipped in ``steth_hub/examples/kauh`` (CC BY 4.0,
Fraiwan et al.), their middle 5 s, band-limited to 2 kHz and resampled to 4 kHz like the
generator's output. Synthetic: two clips per class from the generator, prompted with each real
example's diagnosis, sex and age. Writes 16-bit 4 kHz WAVs (about 40 KB each), ``listening.png``
(log-mel spectrograms on one colour scale, real left, synthetic right) and ``listening.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
REPO = Path(__file__).resolve().parents[1]


def real_examples():
    from steth_hub.audio import decode, resample
    from steth_hub.corpus.diagnosis import normalise_diagnosis
    from steth_hub.corpus.kauh import parse_kauh_name
    from steth_hub.generation.prompts import Conditions, diagnosis_group

    out = []
    for path in sorted((REPO / "steth_hub" / "examples" / "kauh").glob("*.wav")):
        entry = parse_kauh_name(path.name)
        diag = diagnosis_group(normalise_diagnosis(entry["diagnosis"]))
        if diag not in ("asthma", "normal"):
            continue
        rec = decode(path)
        x = resample(rec.samples, rec.sample_rate, 4000)
        mid = len(x) // 2
        x = x[mid - 10000: mid + 10000]
        out.append((path.name, Conditions(diag, entry.get("sex"), entry.get("age")), x / np.abs(x).max() * 0.9))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "docs" / "generators"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steth_hub.generation import load_generator
    from steth_hub.generation.spectral import LogMel
    from steth_hub.generation.writer import wav_bytes

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = load_generator(args.model)
    logmel = LogMel()
    rows = []
    for i, (name, cond, real) in enumerate(real_examples()):
        (synth,) = gen.generate(cond, 5.0, 1, seed=args.seed + i)
        stem = f"{cond.diagnosis}-{i}"
        (out / f"{stem}-real.wav").write_bytes(wav_bytes(real, 4000))
        (out / f"{stem}-synthetic.wav").write_bytes(wav_bytes(synth.samples, synth.sample_rate))
        rows.append({"real": f"{stem}-real.wav", "source": name, "synthetic": f"{stem}-synthetic.wav",
                     "conditions": cond.to_dict(), "seed": args.seed + i,
                     "spec_real": logmel.encode(real[None])[0].numpy(),
                     "spec_synth": logmel.encode(synth.samples[None])[0].numpy()})
    vmin = min(float(np.percentile(r[k], 1)) for r in rows for k in ("spec_real", "spec_synth"))
    vmax = max(float(r[k].max()) for r in rows for k in ("spec_real", "spec_synth"))
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 1.9 * len(rows)), sharex=True, sharey=True, squeeze=False)
    extent = [0, 5, 0, logmel.config.n_mels]
    c = logmel.config  # the frequency at the middle of the (HTK) mel axis

    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    mid_hz = 700 * (10 ** ((mel(c.fmin) + mel(c.fmax)) / 2 / 2595) - 1)
    for r, (left, right) in zip(rows, axes):
        for ax, key, what in ((left, "spec_real", "real"), (right, "spec_synth", "synthetic")):
            ax.imshow(r[key], origin="lower", aspect="auto", extent=extent, vmin=vmin, vmax=vmax, cmap="magma")
            c = r["conditions"]
            ax.set_title(f"{what}: {c['diagnosis']}, {c['sex'] or '?'}, {c['age']:g} y", fontsize=9)
            ax.set_yticks([0, 20, 40])
            ax.set_yticklabels(["20 Hz", f"{mid_hz:.0f} Hz", "2 kHz"], fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    fig.suptitle(f"Log-mel (40 bands, 20 Hz-2 kHz): real KAUH examples vs {gen.name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "listening.png", dpi=64)
    for r in rows:
        r.pop("spec_real"), r.pop("spec_synth")
    (out / "listening.json").write_text(json.dumps({"generator": gen.name, "settings": gen.settings(),
                                                    "rows": rows}, indent=2) + "\n")
    print(f"wrote {len(rows) * 2} WAVs and listening.png to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
