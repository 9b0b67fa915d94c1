"""AI checks AI: the share of synthetic clips the diagnostic classifier classifies as prompted.

    .venv/bin/python bench/generators_check.py --work runs/generators-check [--n 25] [--model M] [--classifier C]

Runs ``steth generate --check`` (the same code, :func:`steth_hub.generation.run.run_generate`) for
each prompt below, ``--n`` clips each, with the shipped generator and the default screening model,
and reports per prompt and overall the share classified as prompted at the classifier's own
threshold (the paper: about 95.2 %). Each prompt's clips and sidecar go to ``WORK/<i>/``; the
summary to ``WORK/check.json`` and ``WORK/check.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = (
    "Breath sample from F-8yo diagnosed with bronchial asthma",   # the paper's example prompt
    "Breath sample from M-45yo diagnosed with bronchial asthma",
    "Breath sample from F-30yo diagnosed with no respiratory disease",
    "Breath sample from M-60yo diagnosed with no respiratory disease",
)


def run(args) -> dict:
    from steth_hub.fileio import atomic_write_json, atomic_write_text
    from steth_hub.generation import load_generator
    from steth_hub.generation.run import GenerateRequest, run_generate

    work = Path(args.work)
    gen = load_generator(args.model)
    rows = []
    for i, prompt in enumerate(PROMPTS):
        result = run_generate(GenerateRequest(out=str(work / f"prompt-{i}"), prompt=prompt, n=args.n, seed=args.seed + i,
                                              check=True, classifier=args.classifier, overwrite=True,
                                              progress=False), generator=gen)
        c = result["check"]
        rows.append({"prompt": prompt, "prompted": c["prompted"], "n": args.n, "as_prompted": c["kept"],
                     "share": c["share_classified_as_prompted"], "threshold": c["threshold"],
                     "p_asthma": [x["p_asthma"] for x in result["clips"]]})
        print(f"{prompt!r}: {c['kept']}/{args.n} classified as prompted", flush=True)
    total = sum(r["as_prompted"] for r in rows)
    n = sum(r["n"] for r in rows)
    report = {"generator": gen.name, "classifier": args.classifier or "steth/efficientat-asthma",
              "settings": gen.settings(), "rows": rows, "overall": {"as_prompted": total, "n": n, "share": total / n}}
    atomic_write_json(work / "check.json", report)
    atomic_write_text(work / "check.md", table(report))
    print(table(report))
    return report


def table(report: dict) -> str:
    lines = ["| prompt | prompted | classified as prompted | median P(asthma) |", "|---|---|---|---|"]
    import numpy as np

    for r in report["rows"]:
        lines.append(f"| {r['prompt']} | {r['prompted']} | {r['as_prompted']}/{r['n']} ({100 * r['share']:.0f}%) | "
                     f"{float(np.median(r['p_asthma'])):.2f} |")
    o = report["overall"]
    lines.append(f"| all | | {o['as_prompted']}/{o['n']} ({100 * o['share']:.1f}%) | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/generators-check")
    ap.add_argument("--n", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--classifier", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
