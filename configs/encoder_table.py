"""The pretrained-encoder comparison table, and the selection rule of configs/README.md applied to it.

    .venv/bin/python configs/encoder_table.py runs/efficientat-asthma/eval [--extra NAME=DIR ...] [--out table.md]

Reads ``DIR/seedS/<model>/evaluation.json`` (written by configs/reproduce_efficientat_asthma.sh, one
folder per fold seed) and prints, per model and fold seed, the patient-level AUROC within KAUH and
pooled, and sensitivity / specificity at each fold's own threshold, with their 95% patient-bootstrap
intervals; then the mean within-KAUH AUROC over the seeds and which candidate the rule chooses.
``--extra NAME=DIR`` adds another run's seed folders (e.g. the AST trials) to the same table.
Numbers come from the reports only; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: the rule of configs/README.md ("Pretrained encoders"): shippable candidates, the bar over the baseline
SHIPPABLE = ("efficientat-asthma",)
BAR = 0.05
TIE = 0.01


def _fmt(entry) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), (int, float)):
        return "n/a"
    low, high = entry.get("low"), entry.get("high")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
        return f"{entry['value']:.2f}"
    return f"{entry['value']:.2f} [{low:.2f}, {high:.2f}]"


def _rows(block: dict) -> dict:
    patient = block["levels"]["patient"]
    kauh = (block.get("subgroups") or {}).get("source=kauh") or {}
    return {"kauh": kauh.get("auroc"), "pooled": patient.get("auroc"), "sens": patient.get("sensitivity"),
            "spec": patient.get("specificity")}


def collect(folders: dict[str, Path]) -> dict[str, dict[int, dict]]:
    """``{model: {seed: rows}}`` with the MFCC baseline of every report under the name ``mfcc-logreg``."""
    table: dict[str, dict[int, dict]] = {}
    for folder in folders.values():
        for seed_dir in sorted(folder.glob("seed*")):
            try:
                seed = int(seed_dir.name[4:])
            except ValueError:
                continue
            for report_path in sorted(seed_dir.glob("*/evaluation.json")):
                report = json.loads(report_path.read_text())
                table.setdefault(report["name"], {})[seed] = _rows(report["model"])
                if report.get("baseline"):
                    table.setdefault("mfcc-logreg", {})[seed] = _rows(report["baseline"])
    return table


def mean_kauh(per_seed: dict[int, dict], seeds: list[int]) -> float | None:
    values = [per_seed[s]["kauh"]["value"] for s in seeds if s in per_seed and isinstance(per_seed[s]["kauh"], dict)]
    return sum(values) / len(values) if len(values) == len(seeds) else None


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the folder holding seed0/, seed1/, ...")
    parser.add_argument("--extra", action="append", default=[], help="NAME=DIR of further seed folders")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    folders = {"main": args.folder}
    folders.update({name: Path(d) for name, d in (e.split("=", 1) for e in args.extra)})
    table = collect(folders)
    seeds = sorted({s for per_seed in table.values() for s in per_seed})
    main_seeds = sorted({s for s in table.get("efficientat-asthma", {})})
    lines = ["| model | fold seed | AUROC within KAUH (76 patients, 25 asthma) | AUROC pooled (103) | sensitivity | "
             "specificity |", "|---|---|---|---|---|---|"]
    for name, per_seed in table.items():
        for seed in seeds:
            if seed in per_seed:
                r = per_seed[seed]
                lines.append(f"| {name} | {seed} | {_fmt(r['kauh'])} | {_fmt(r['pooled'])} | {_fmt(r['sens'])} | "
                             f"{_fmt(r['spec'])} |")
    lines += ["", f"Mean patient-level AUROC within KAUH over fold seeds {', '.join(map(str, main_seeds))}:", ""]
    means = {name: mean_kauh(per_seed, main_seeds) for name, per_seed in table.items()}
    for name, value in means.items():
        lines.append(f"- {name}: " + (f"{value:.3f}" if value is not None else "not run on every seed"))
    candidates = {n: v for n, v in means.items() if n in SHIPPABLE and v is not None}
    base = means.get("mfcc-logreg")
    if candidates and base is not None:
        best = max(candidates, key=candidates.get)
        verdict = ("becomes the default" if candidates[best] >= base + BAR else
                   f"does not clear the bar (MFCC baseline + {BAR}): the default is unchanged")
        lines += ["", f"Rule (configs/README.md): the shippable candidate with the highest mean is `{best}` "
                      f"({candidates[best]:.3f}, MFCC baseline {base:.3f}, gap {candidates[best] - base:+.3f}); it {verdict}."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
