"""The VLM comparison (issue 17): with and without patient facts, against the default classifier, the MFCC
baseline and the facts alone, on the same patient-grouped folds.

    .venv/bin/python configs/vlm_table.py [REPORT_DIR] [--seed 0 1 2] [--out table.md] [--model-dir MODEL]

Reads ``vlm-asthma`` and ``vlm-asthma-nofacts`` reports (``REPORT_DIR/seedS/<name>/evaluation.json`` as
configs/reproduce_vlm_asthma.sh writes them, or the kept ``configs/results/vlm/<name>.seedS.report.json``),
the default classifier's kept report of the same fold seed (``configs/results/efficientat-asthma.seedS.evaluation.json``)
and the MFCC baseline scored beside ``vlm-asthma``; checks that all used the same folds. The two
"facts alone" rows are a logistic regression on the patient's age (and sex) only, fitted on each fold's
training patients and scored on its held-out ones, the same folds: what the facts can do without any
sound. Patient-level AUROC within KAUH and pooled, 95% patient-bootstrap intervals. Numbers come from
the reports and the corpus only. ``--model-dir`` records the table, the threshold and the evaluation of
``vlm-asthma`` (the first fold seed given) in that model's ``steth.json`` (what ``steth train --evaluation`` records), for its card.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from steth_hub.evaluation_report import format_value

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_table import report_rows  # noqa: E402  (configs/encoder_table.py: the same table cells)

REPO = Path(__file__).resolve().parents[1]
KEPT = REPO / "configs" / "results"
NAMES = ("vlm-asthma", "vlm-asthma-nofacts")


def _report(folder: Path | None, name: str, seed: int) -> tuple[dict, Path]:
    candidates = ([folder / f"seed{seed}" / name / "evaluation.json"] if folder else []) + \
        [KEPT / "vlm" / f"{name}.seed{seed}.report.json", KEPT / f"{name}.seed{seed}.evaluation.json"]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text()), path
    raise SystemExit(f"no report for {name} fold seed {seed} (looked in {', '.join(map(str, candidates))})")


def facts_alone(report: dict, columns: tuple[str, ...], seed: int) -> dict:
    """Patient-level AUROC of a logistic regression on ``columns`` (age, sex) over the report's own folds."""
    from sklearn.linear_model import LogisticRegression

    from steth_hub.corpus import load_corpus
    from steth_hub.metrics import bootstrap_ci

    corpus = load_corpus(REPO / report["corpus"]["path"] if not Path(report["corpus"]["path"]).is_absolute()
                         else report["corpus"]["path"])
    table = corpus.dataset.select_columns(["patient_id", "sex", "age", "label", "source"]).to_dict()
    facts: dict[str, dict] = {}
    for i, pid in enumerate(table["patient_id"]):
        row = facts.setdefault(pid, {"label": 0})
        row["label"] = max(row["label"], int(table["label"][i]))
        row.update(sex=table["sex"][i], age=table["age"][i], source=table["source"][i])
    ages = [r["age"] for r in facts.values() if r["age"] is not None]
    fill = float(np.median(ages)) if ages else 0.0

    def x(pid):
        r = facts[pid]
        out = []
        if "age" in columns:
            out += [float(r["age"]) if r["age"] is not None else fill, float(r["age"] is None)]
        if "sex" in columns:
            out += [float(r["sex"] == "M"), float(r["sex"] is None)]
        return out

    prob, ids = {}, []
    for fold in report["folds"]:
        test = fold["patients"]["test"]
        train = fold["patients"]["train"] + fold["patients"]["valid"]
        model = LogisticRegression(class_weight="balanced", max_iter=1000)
        model.fit(np.array([x(p) for p in train]), np.array([facts[p]["label"] for p in train]))
        for p, v in zip(test, model.predict_proba(np.array([x(p) for p in test]))[:, 1]):
            prob[p] = float(v)
            ids.append(p)
    y = np.array([facts[p]["label"] for p in ids])
    p = np.array([prob[q] for q in ids])
    kauh = np.array([facts[q]["source"] == "kauh" for q in ids])
    pooled = bootstrap_ci(y, p, groups=np.array(ids), n=2000, seed=seed, metrics=("auroc",))["auroc"]
    within = bootstrap_ci(y[kauh], p[kauh], groups=np.array(ids)[kauh], n=2000, seed=seed, metrics=("auroc",))["auroc"]
    return {"kauh": within, "pooled": pooled, "sens": None, "spec": None}


LABELS = {"facts": "vlm-asthma (image + sex, age, site)", "image": "vlm-asthma-nofacts (image only)",
          "default": "efficientat-asthma (the default)", "mfcc": "mfcc-logreg (baseline)",
          "agesex": "facts alone: age + sex (no sound)", "age": "facts alone: age (no sound)"}


def build_seed(folder: Path | None, seed: int) -> tuple[dict, dict]:
    """``({row key: rows}, the vlm-asthma report)`` for one fold seed, all on the same folds."""
    reports = {name: _report(folder, name, seed)[0] for name in NAMES}
    default, _ = _report(None, "efficientat-asthma", seed)
    fingerprints = {name: r["protocol"]["folds_fingerprint"] for name, r in reports.items()}
    fingerprints["efficientat-asthma"] = default["protocol"]["folds_fingerprint"]
    if len(set(fingerprints.values())) != 1:
        raise SystemExit(f"fold seed {seed}: the reports used different folds: {fingerprints}")
    rows = {
        "facts": report_rows(reports["vlm-asthma"]["model"]),
        "image": report_rows(reports["vlm-asthma-nofacts"]["model"]),
        "default": report_rows(default["model"]),
        "mfcc": report_rows(reports["vlm-asthma"]["baseline"]),
        "agesex": facts_alone(reports["vlm-asthma"], ("age", "sex"), seed),
        "age": facts_alone(reports["vlm-asthma"], ("age",), seed),
    }
    return rows, reports["vlm-asthma"]


def _value(rows: dict, key: str, col: str):
    entry = rows[key][col]
    return entry["value"] if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float)) else None


def build(folder: Path | None, seeds: list[int]) -> tuple[str, dict, dict]:
    per_seed = {seed: build_seed(folder, seed) for seed in seeds}
    lines = ["| model | fold seed | AUROC within KAUH | AUROC pooled | sensitivity | specificity |",
             "|---|---|---|---|---|---|"]
    for key, label in LABELS.items():
        for seed, (rows, _) in per_seed.items():
            r = rows[key]
            cells = " | ".join(format_value(r[col]) for col in ("kauh", "pooled", "sens", "spec"))
            lines.append(f"| {label} | {seed} | {cells} |")
    means = {key: {col: float(np.mean([_value(rows, key, col) for rows, _ in per_seed.values()]))
                   for col in ("kauh", "pooled")} for key in LABELS}
    lines += ["", f"Mean over fold seeds {', '.join(map(str, seeds))} (within KAUH / pooled):", ""]
    lines += [f"- {LABELS[key]}: {m['kauh']:.3f} / {m['pooled']:.3f}" for key, m in means.items()]
    return "\n".join(lines), {seed: rows for seed, (rows, _) in per_seed.items()}, per_seed[seeds[0]][1]


def reading(per_seed: dict) -> str:
    """What the table says about the facts, per fold seed, in words computed from the numbers."""
    parts = []
    for seed, rows in per_seed.items():
        facts, image = _value(rows, "facts", "kauh"), _value(rows, "image", "kauh")
        alone = max(_value(rows, "agesex", "kauh"), _value(rows, "age", "kauh"))
        text = f"Fold seed {seed}: within KAUH the VLM scores {image:.2f} on the image only and {facts:.2f} with the facts"
        if facts - image > 0.05:
            text += (f" (facts alone {alone:.2f}): the facts add to the image" if facts > alone + 0.05 else
                     f", about what the facts alone give ({alone:.2f}): the facts carry it")
        elif image - facts > 0.05:
            text += (f", close to the facts alone ({alone:.2f}): given the facts it learnt them and lost the image"
                     if abs(facts - alone) <= 0.05 else ": the facts made it worse")
        else:
            text += ": the facts change little"
        parts.append(text + ".")
    return " ".join(parts)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", help="reproduce script's eval folder (default: kept reports)")
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="fold seeds (e.g. --seed 0 1 2)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model-dir", type=Path, help="record table, threshold and evaluation in this model's steth.json")
    args = parser.parse_args(argv)
    table, per_seed, report = build(args.folder, list(args.seed))
    text = table + "\n\n" + reading(per_seed)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.model_dir:
        from steth_hub.fileio import atomic_write_json

        path = args.model_dir / "steth.json"
        meta = json.loads(path.read_text())
        meta["threshold"] = float(report["recommended_threshold"])
        meta["evaluation"] = report
        meta.setdefault("training", {})["threshold_from"] = (
            "cross-validation: max Youden's J on the pooled out-of-fold recording probabilities")
        meta["comparison"] = {"table": table, "note": reading(per_seed)}
        atomic_write_json(path, meta)
    return text


if __name__ == "__main__":
    main()
