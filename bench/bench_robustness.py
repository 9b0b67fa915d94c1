"""Robustness of a screening model to inaudible or harmless changes of the recording.

    .venv/bin/python bench/bench_robustness.py MODEL_DIR_OR_NAME [--data DIR] [--limit N] [--seed 0]
                                               [--out result.json] [--threads N]

MODEL_DIR_OR_NAME is anything ``steth_hub.from_pretrained`` takes (a model folder, the embedded
``steth/ast-asthma``, a cached Hub repo). Every recording of the shared KAUH + ICBHI data (or
``--data DIR``: ``DIR/*/*.wav``) is screened clean and under each perturbation:

* white noise at 60, 40 and 30 dB SNR (noise RMS that many dB below the recording's RMS);
* 8-bit requantisation (the samples rounded to 1/128 of full scale, as an 8-bit file holds them);
* gain +6 dB (clipped at full scale, as a recorder would) and -6 dB;
* resampling to 8 kHz and back to the recording's own rate (soxr), a telephone-grade path;
  for 4 kHz recordings this is nearly lossless, so the row mostly measures the 44.1 kHz ones.

For each perturbation: the flip rate of the screening decision (at the model's own threshold,
or ``--threshold``), the flips of clean positives, and the mean / max |P(asthma) shift|, overall
and per source (KAUH, ICBHI); and what a user would see: how many changed recordings ``steth
screen`` flags as degraded (the 8-bit check of ``steth_hub.audio``, run on the changed samples
as on a file) or as unstable (screening's stability checks, ``steth_hub.stability``, where the
model asks for them: ``--stability``), and the *silent* flips, those it flags neither way; and
how many flips a user screening the clean recording was warned of (``clean_unstable_flips``).
Reports written before the stability checks existed have no ``unstable`` count; their silent
flips are the flips not flagged as degraded. A recording the preprocessing rejects after the perturbation (for example
clipped by +6 dB) is counted as ``rejected``, not as a flip. Seeded: the noise of recording i
under condition c comes from ``default_rng([seed, i, c])``, so reruns and other models see the
same noise.

The bar (stated in bench/README.md): flip rate at most 5 % under 60 and 40 dB noise, 8-bit
requantisation, +-6 dB gain and resampling; 30 dB is reported, not judged. The table says PASS or
FAIL per row; the exit status is 0 either way (it is a measurement, not a test).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recordings import recording_files  # noqa: E402  (bench/recordings.py)

from steth_hub.stability import perturb  # noqa: E402,F401  (one definition of each change, shared with screening)

#: (name, kind, parameter); judged = counted against the bar
CONDITIONS = [
    ("noise 60 dB SNR", "noise", 60.0),
    ("noise 40 dB SNR", "noise", 40.0),
    ("noise 30 dB SNR", "noise", 30.0),
    ("8-bit requantisation", "bits", 8),
    ("gain +6 dB", "gain", 6.0),
    ("gain -6 dB", "gain", -6.0),
    ("resample 8 kHz and back", "resample", 8000),
]
#: the largest flip rate a condition may have to pass (None: reported only)
BAR = {"noise 60 dB SNR": 0.05, "noise 40 dB SNR": 0.05, "noise 30 dB SNR": None, "8-bit requantisation": 0.05,
       "gain +6 dB": 0.05, "gain -6 dB": 0.05, "resample 8 kHz and back": 0.05}


def source_of(path: Path) -> str:
    return path.parent.name.lower()


def score(model, pipeline, recording):
    """(probability, decision, flagged degraded, flagged unstable), or (None, reason, False, False) when the
    recording is rejected."""
    from steth_hub.errors import StethError
    from steth_hub.screening import screen_loaded

    try:
        result = screen_loaded(recording, model, pipeline, keep=False)
    except StethError as exc:
        return None, exc.code, False, False
    return (float(result.probability), bool(result.decision), any(w.startswith("degraded") for w in result.warnings),
            result.stable is False)


def summarise(rows: list[dict]) -> dict:
    scored = [r for r in rows if r["p"] is not None]
    shifts = np.array([abs(r["p"] - r["p0"]) for r in scored]) if scored else np.zeros(0)
    flips = sum(r["d"] != r["d0"] for r in scored)
    silent = sum(r["d"] != r["d0"] and not r["warned"] and not r["unstable"] for r in scored)
    positives = [r for r in scored if r["d0"]]
    return {
        "n": len(scored),
        "rejected": len(rows) - len(scored),
        "flips": int(flips),
        "flip_rate": float(flips / len(scored)) if scored else None,
        "warned": int(sum(bool(r["warned"]) for r in scored)),
        "unstable": int(sum(bool(r["unstable"]) for r in scored)),
        "unstable_flips": int(sum(r["d"] != r["d0"] and bool(r["unstable"]) for r in scored)),
        "clean_unstable_flips": int(sum(r["d"] != r["d0"] and bool(r["unstable0"]) for r in scored)),
        "silent_flips": int(silent),
        "silent_flip_rate": float(silent / len(scored)) if scored else None,
        "positives": len(positives),
        "positives_flipped": int(sum(not r["d"] for r in positives)),
        "mean_abs_shift": float(shifts.mean()) if len(shifts) else None,
        "max_abs_shift": float(shifts.max()) if len(shifts) else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder or name (steth_hub.from_pretrained)")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of recordings (DIR/*/*.wav; default: the shared KAUH + ICBHI data)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many recordings (seeded choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--threshold", type=float, default=None,
                        help="decide at this P(asthma) instead of the model's own threshold (e.g. a fold "
                             "seed's out-of-fold threshold for a model trained without one)")
    parser.add_argument("--stability", choices=("model", "on", "off"), default="model",
                        help="screening's stability checks: those the model asks for (default), the default "
                             "checks, or none (about 3 times faster with two checks; nothing is then flagged unstable)")
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import steth_hub
    from steth_hub.audio import Recording, decode, from_array
    from steth_hub.errors import StethError
    from steth_hub.screening import ScreeningPipeline

    if args.data is not None:
        files, where = sorted(args.data.glob("*/*.wav")) or sorted(args.data.glob("*.wav")), str(args.data)
    else:
        files, where = recording_files("*/*.wav")
    if args.limit:
        files = sorted(np.random.default_rng(args.seed).permutation(files)[: args.limit].tolist())
        files = [Path(f) for f in files]
    if not files:
        print(f"no recordings found in {where}", file=sys.stderr)
        return 2
    model = steth_hub.from_pretrained(args.model)
    if args.threshold is not None:  # decided (and checked for stability) at this threshold, on a copy
        import copy

        model = copy.copy(model)
        model.threshold = float(args.threshold)
    pipeline = ScreeningPipeline(model, {"model": None, "on": True, "off": False}[args.stability])
    threshold = float(model.threshold)
    print(f"model {args.model} ({model.plugin_name}, threshold {threshold:.3f}); {len(files)} recordings "
          f"from {where}; seed {args.seed}", file=sys.stderr)

    started = time.perf_counter()
    rows: dict[str, list[dict]] = {name: [] for name, _, _ in CONDITIONS}
    clean_rejected = clean_unstable = clean_scored = 0
    for i, path in enumerate(files):
        try:
            rec = decode(path)
        except StethError:
            clean_rejected += 1
            continue
        p0, d0, _, unstable0 = score(model, pipeline, rec)
        if p0 is None:
            clean_rejected += 1
            continue
        clean_scored += 1
        clean_unstable += bool(unstable0)
        for c, (name, kind, value) in enumerate(CONDITIONS):
            rng = np.random.default_rng([args.seed, i, c])
            samples = perturb(rec.samples, rec.sample_rate, kind, value, rng)
            flags = [w for w in from_array(samples, rec.sample_rate, allow_silent=True).warnings
                     if w.startswith("degraded")]  # what decode would say of these samples in a file
            changed = Recording(samples=samples, sample_rate=rec.sample_rate, source=str(path),
                                original_sample_rate=rec.original_sample_rate, channels=1, subtype=rec.subtype,
                                warnings=flags)
            p, d, warned, unstable = score(model, pipeline, changed)
            rows[name].append({"file": path.name, "source": source_of(path), "p0": p0, "d0": d0,
                               "p": p, "d": d if p is not None else None, "warned": warned, "unstable": unstable,
                               "unstable0": unstable0})
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(files)} recordings, {time.perf_counter() - started:.0f} s", file=sys.stderr)

    sources = sorted({r["source"] for rs in rows.values() for r in rs})
    results = []
    for name, kind, value in CONDITIONS:
        overall = summarise(rows[name])
        bar = BAR.get(name)
        verdict = None if bar is None or overall["flip_rate"] is None else bool(overall["flip_rate"] <= bar)
        results.append({"condition": name, "kind": kind, "value": value, "bar_max_flip_rate": bar,
                        "passes": verdict, **overall,
                        "by_source": {s: summarise([r for r in rows[name] if r["source"] == s]) for s in sources},
                        "flipped_files": sorted(r["file"] for r in rows[name]
                                                if r["p"] is not None and r["d"] != r["d0"])})

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    def num(x):
        return "-" if x is None else f"{x:.3f}"

    header = ("| condition | recordings | flips | flip rate | clean positives flipped | mean abs dP | max abs dP | "
              + " | ".join(f"flip rate {s}" for s in sources) + " | rejected | flagged degraded | flagged unstable (flips) | flips flagged unstable clean | silent flips | bar |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        verdict = "-" if r["passes"] is None else ("PASS" if r["passes"] else "FAIL")
        lines.append(f"| {r['condition']} | {r['n']} | {r['flips']} | {pct(r['flip_rate'])} | "
                     f"{r['positives_flipped']}/{r['positives']} | {num(r['mean_abs_shift'])} | "
                     f"{num(r['max_abs_shift'])} | "
                     + " | ".join(pct(r["by_source"][s]["flip_rate"]) for s in sources)
                     + f" | {r['rejected']} | {r['warned']} | {r['unstable']} ({r['unstable_flips']}) | "
                       f"{r['clean_unstable_flips']} | {pct(r['silent_flip_rate'])} | {verdict} |")
    table = "\n".join(lines)
    print(table)
    seconds = time.perf_counter() - started
    print(f"{clean_rejected} recording(s) rejected clean (not scored); {clean_unstable} of {clean_scored} clean "
          f"recordings flagged unstable; {seconds:.0f} s", file=sys.stderr)
    if args.out:
        from steth_hub.fileio import atomic_write_json

        training = dict((getattr(model, "metadata", None) or {}).get("training") or {})
        trained = {"recipe": (training.get("experiment") or {}).get("name"), "epochs": training.get("epochs"),
                   "global_step": training.get("global_step"), "n_patients": training.get("n_patients")}
        atomic_write_json(args.out, {
            "benchmark": "robustness", "model": args.model, "plugin": model.plugin_name, "trained": trained,
            "threshold": threshold, "threshold_from": "model" if args.threshold is None else "--threshold",
            "stability_checks": [list(c) for c in pipeline.stability_checks],
            "data": where, "n_files": len(files),
            "clean_rejected": clean_rejected, "clean_unstable": clean_unstable,
            "seed": args.seed, "seconds": round(seconds, 1),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "bar": "flip rate <= 5% under 60/40 dB noise, 8-bit, +-6 dB gain, resampling; 30 dB reported only",
            "results": results, "table": table,
        })
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
