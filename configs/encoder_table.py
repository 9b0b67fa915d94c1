"""The pretrained-encoder comparison table, and the selection rule of configs/README.md applied to it.

    .venv/bin/python configs/encoder_table.py runs/efficientat-asthma/eval [MORE ...] [--out table.md]
    .venv/bin/python configs/encoder_table.py configs/results          # the kept reports

Reads every ``evaluation.json`` under the folders given (``seedS/<model>/evaluation.json`` as
configs/reproduce_efficientat_asthma.sh writes them, or ``<trial>.seedS.evaluation.json`` as kept
in configs/results/) whose folds were recomputed with ``--folds 5 --seed S`` for S in 0, 1, 2, and
prints, per model and fold seed, the patient-level AUROC within KAUH and pooled, and sensitivity /
specificity at each fold's own threshold, with their 95% patient-bootstrap intervals; then the
mean within-KAUH AUROC over the seeds and which candidate the rule chooses. Runs on the same fold
seed share their folds (the fingerprint is checked). Numbers come from the reports only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steth_hub.evaluation_report import format_value

#: the rule of configs/README.md ("Pretrained encoders"): shippable candidates, the bar over the baseline
SHIPPABLE = ("efficientat-asthma",)
BAR = 0.05
TIE = 0.01
#: the second rule (a common noise floor): not worse than the first rule's choice by more than this
NON_INFERIORITY = 0.02
SEEDS = (0, 1, 2)
#: how the table names the trials kept under other names
NAMES = {"fe4k-pre30-lp": "ast-asthma"}
#: the rows shown (the earlier AST trials in configs/results/ are left out)
SHOWN = ("efficientat-asthma-robust", "efficientat-asthma-floor", "efficientat-asthma", "efficientat-probe",
         "ast-asthma-distilled", "ast-asthma", "mfcc-logreg", "mfcc-logreg (excerpt-10s-floor)")
#: the distilled-AST rule (configs/README.md): its mean over these seeds against the shipped AST's and the teacher's
DISTILL_SEEDS = (1, 2)
#: the noisy-copies rule: the robustness bench of its final model, kept beside the reports
ROBUST_BENCH = "efficientat-asthma-robust.robustness.json"


def report_rows(block: dict) -> dict:
    """One model's table cells from a report block: AUROC within KAUH and pooled, sensitivity, specificity
    (patient level); configs/vlm_table.py reads its reports the same way."""
    patient = block["levels"]["patient"]
    kauh = (block.get("subgroups") or {}).get("source=kauh") or {}
    return {"kauh": kauh.get("auroc"), "pooled": patient.get("auroc"), "sens": patient.get("sensitivity"),
            "spec": patient.get("specificity")}


def collect(folders: list[Path]) -> dict[str, dict[int, dict]]:
    """``{model: {seed: rows}}``; the MFCC baseline of every report is kept under ``mfcc-logreg``."""
    table: dict[str, dict[int, dict]] = {}
    fingerprints: dict[int, str] = {}
    paths = sorted({p for folder in folders for p in Path(folder).rglob("*evaluation.json")})
    for path in paths:
        report = json.loads(path.read_text())
        protocol = report.get("protocol") or {}
        if protocol.get("folds_from") != "recomputed" or report.get("quick") or int(protocol.get("seed", -1)) not in SEEDS:
            continue
        seed = int(protocol["seed"])
        if fingerprints.setdefault(seed, protocol["folds_fingerprint"]) != protocol["folds_fingerprint"]:
            raise SystemExit(f"{path}: fold seed {seed} has other folds than the runs before it (another corpus?)")
        table.setdefault(NAMES.get(report["name"], report["name"]), {})[seed] = report_rows(report["model"])
        if report.get("baseline"):  # the baseline on the report's own preset
            preset = ((report.get("experiment") or {}).get("preset") or {})
            preset = preset.get("name") if isinstance(preset, dict) else preset
            name = "mfcc-logreg" if preset in (None, "excerpt-10s") else f"mfcc-logreg ({preset})"
            table.setdefault(name, {})[seed] = report_rows(report["baseline"])
    return table


def _robust_verdict(table: dict, folders) -> list[str]:
    """The noisy-copies rule: (a) the robustness bar on its final model, (b) not worse within KAUH."""
    bench = next((Path(f) / ROBUST_BENCH for f in folders if (Path(f) / ROBUST_BENCH).is_file()), None)
    if bench is None or "efficientat-asthma-robust" not in table:
        return []
    results = json.loads(bench.read_text())["results"]
    failed = [r["condition"] for r in results if r.get("passes") is False]
    flips = ", ".join(f"{r['condition']} {100 * r['flip_rate']:.1f}%" for r in results
                      if r.get("bar_max_flip_rate") is not None)
    done = sorted(table["efficientat-asthma-robust"])
    robust = mean_kauh(table["efficientat-asthma-robust"], done)
    first = mean_kauh(table.get("efficientat-asthma", {}), done)
    verdict = ("passes the bar" if not failed else f"fails the bar ({', '.join(failed)})")
    line = (f"Noisy-copies rule (configs/README.md): the final model of `efficientat-asthma-robust` {verdict}; "
            f"flips: {flips}. Within KAUH over fold seed(s) {', '.join(map(str, done))}: {robust:.3f} against "
            f"`efficientat-asthma` {first:.3f}. ")
    line += ("It replaces the default only if it passes the bar and is not worse: "
             + ("it does." if not failed and robust >= first - NON_INFERIORITY else "the default stays."))
    return ["", line]


def _distill_verdict(table: dict) -> list[str]:
    """The distilled-AST rule: its mean within KAUH over DISTILL_SEEDS against the shipped AST's and the teacher's."""
    seeds = list(DISTILL_SEEDS)
    student = mean_kauh(table.get("ast-asthma-distilled", {}), seeds)
    shipped = mean_kauh(table.get("ast-asthma", {}), seeds)
    teacher = mean_kauh(table.get("efficientat-probe", {}), seeds)
    if student is None or shipped is None or teacher is None:
        return []
    line = (f"Distilled-AST rule (configs/README.md): `ast-asthma-distilled` {student:.3f} within KAUH over fold seeds "
            f"{', '.join(map(str, seeds))}, the shipped `ast-asthma` recipe {shipped:.3f}, the teacher "
            f"(`efficientat-probe`) {teacher:.3f}: ")
    line += ("it replaces `steth/ast-asthma`" if student > shipped else "`steth/ast-asthma` stays")
    line += ("; it does not approach the teacher (more than 0.05 below)." if student < teacher - 0.05
             else "; it is within 0.05 of the teacher.")
    return ["", line]


def mean_kauh(per_seed: dict[int, dict], seeds: list[int]) -> float | None:
    values = [per_seed[s]["kauh"]["value"] for s in seeds if s in per_seed and isinstance(per_seed[s]["kauh"], dict)]
    return sum(values) / len(values) if len(values) == len(seeds) else None


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="folders holding evaluation reports")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--model-dir", type=Path, help="record the table as the comparison in this model's "
                        "steth.json (then `steth card MODEL_DIR` shows it)")
    args = parser.parse_args(argv)
    table = {name: rows for name, rows in collect(args.folders).items() if name in SHOWN}
    table = {name: table[name] for name in SHOWN if name in table}
    seeds = sorted({s for per_seed in table.values() for s in per_seed})
    main_seeds = list(SEEDS)
    lines = ["| model | fold seed | AUROC within KAUH (76 patients, 25 asthma) | AUROC pooled (103) | sensitivity | "
             "specificity |", "|---|---|---|---|---|---|"]
    for name, per_seed in table.items():
        for seed in seeds:
            if seed in per_seed:
                r = per_seed[seed]
                cells = " | ".join(format_value(r[col]) for col in ("kauh", "pooled", "sens", "spec"))
                lines.append(f"| {name} | {seed} | {cells} |")
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
    done = sorted(table.get("efficientat-asthma-floor", {}))
    floor = mean_kauh(table.get("efficientat-asthma-floor", {}), done) if done else None
    first = mean_kauh(table.get("efficientat-asthma", {}), done) if done else None
    if floor is not None and first is not None:
        if done != list(SEEDS):
            lines += ["", f"(the floor recipe finished fold seeds {', '.join(map(str, done))} only: both means below "
                          "are over those seeds)"]
        ok = floor >= first - NON_INFERIORITY
        lines += ["", f"Noise-floor rule (configs/README.md): `efficientat-asthma-floor` {floor:.3f} against "
                      f"`efficientat-asthma` {first:.3f}: {'not worse (>= ' if ok else 'worse (< '}"
                      f"{first - NON_INFERIORITY:.3f}); it replaces the default only if it also passes the "
                      "robustness bar (bench/README.md)."]
    lines += _robust_verdict(table, args.folders) + _distill_verdict(table)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    if args.model_dir:
        from steth_hub.fileio import atomic_write_json

        path = args.model_dir / "steth.json"
        meta = json.loads(path.read_text())
        meta["comparison"] = {"table": text.strip(), "note": "Patient-grouped 5-fold cross-validation, fold seeds "
                              "0-2 (steth evaluate --folds 5 --seed S), 95% patient-bootstrap intervals; written by "
                              "configs/encoder_table.py from the reports in configs/results/."}
        atomic_write_json(path, meta)
    print(text)
    return text


if __name__ == "__main__":
    main()
