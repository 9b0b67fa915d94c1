"""The VLM comparison (issue 17): with and without patient facts, against the default classifier, the MFCC
baseline and the facts alone, on the same patient-grouped folds.

    .venv/bin/python configs/vlm_table.py [REPORT_DIR] [--seed 0] [--out table.md] [--model-dir MODEL]

Reads ``vlm-asthma`` and ``vlm-asthma-nofacts`` reports (``REPORT_DIR/seedS/<name>/evaluation.json`` as
configs/reproduce_vlm_asthma.sh writes them, or the kept ``configs/results/vlm/<name>.seedS.report.json``),
the default classifier's kept report of the same fold seed (``configs/results/efficientat-asthma.seedS.evaluation.json``)
and the MFCC baseline scored beside ``vlm-asthma``; checks that all used the same folds. The two
"facts alone" rows are a logistic regression on the patient's age (and sex) only, fitted on each fold's
training patients and scored on its held-out ones, the same folds: what the facts can do without any
sound. Patient-level AUROC within KAUH and pooled, 95% patient-bootstrap intervals. Numbers come from
the reports and the corpus only. ``--model-dir`` records the table, the threshold and the evaluation of
``vlm-asthma`` in that model's ``steth.json`` (what ``steth train --evaluation`` records), for its card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEPT = REPO / "configs" / "results"
NAMES = ("vlm-asthma", "vlm-asthma-nofacts")


def _fmt(entry) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), (int, float)):
        return "n/a"
    low, high = entry.get("low"), entry.get("high")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
        return f"{entry['value']:.2f}"
    return f"{entry['value']:.2f} [{low:.2f}, {high:.2f}]"


def _report(folder: Path | None, name: str, seed: int) -> tuple[dict, Path]:
    candidates = ([folder / f"seed{seed}" / name / "evaluation.json"] if folder else []) + \
        [KEPT / "vlm" / f"{name}.seed{seed}.report.json", KEPT / f"{name}.seed{seed}.evaluation.json"]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text()), path
    raise SystemExit(f"no report for {name} fold seed {seed} (looked in {', '.join(map(str, candidates))})")


def _rows(block: dict) -> dict:
    patient = block["levels"]["patient"]
    kauh = (block.get("subgroups") or {}).get("source=kauh") or {}
    return {"kauh": kauh.get("auroc"), "pooled": patient.get("auroc"), "sens": patient.get("sensitivity"),
            "spec": patient.get("specificity")}


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


def build(folder: Path | None, seed: int) -> tuple[str, dict, dict]:
    reports = {name: _report(folder, name, seed)[0] for name in NAMES}
    default, _ = _report(None, "efficientat-asthma", seed)
    fingerprints = {name: r["protocol"]["folds_fingerprint"] for name, r in reports.items()}
    fingerprints["efficientat-asthma"] = default["protocol"]["folds_fingerprint"]
    if len(set(fingerprints.values())) != 1:
        raise SystemExit(f"the reports used different folds: {fingerprints}")
    rows = {
        "vlm-asthma (image + sex, age, site)": _rows(reports["vlm-asthma"]["model"]),
        "vlm-asthma-nofacts (image only)": _rows(reports["vlm-asthma-nofacts"]["model"]),
        "efficientat-asthma (the default)": _rows(default["model"]),
        "mfcc-logreg (baseline)": _rows(reports["vlm-asthma"]["baseline"]),
        "facts alone: age + sex (no sound)": facts_alone(reports["vlm-asthma"], ("age", "sex"), seed),
        "facts alone: age (no sound)": facts_alone(reports["vlm-asthma"], ("age",), seed),
    }
    lines = [f"| model (fold seed {seed}, the same 5 patient folds) | AUROC within KAUH | AUROC pooled | sensitivity | "
             "specificity |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {_fmt(r['kauh'])} | {_fmt(r['pooled'])} | {_fmt(r['sens'])} | {_fmt(r['spec'])} |")
    return "\n".join(lines), rows, reports["vlm-asthma"]


def reading(rows: dict) -> str:
    """What the table says about the facts, in words computed from the numbers."""
    def v(name, col):
        entry = rows[name][col]
        return entry["value"] if isinstance(entry, dict) else None

    facts_k, image_k = v("vlm-asthma (image + sex, age, site)", "kauh"), v("vlm-asthma-nofacts (image only)", "kauh")
    facts_p, image_p = v("vlm-asthma (image + sex, age, site)", "pooled"), v("vlm-asthma-nofacts (image only)", "pooled")
    age_k, age_p = v("facts alone: age (no sound)", "kauh"), v("facts alone: age (no sound)", "pooled")
    both_k = v("facts alone: age + sex (no sound)", "kauh")
    parts = [f"Within KAUH the facts move the VLM from {image_k:.2f} (image only) to {facts_k:.2f}; pooled from "
             f"{image_p:.2f} to {facts_p:.2f}.",
             f"Age and sex alone, with no sound at all, reach {both_k:.2f} within KAUH and age alone "
             f"{age_k:.2f} within KAUH / {age_p:.2f} pooled."]
    if facts_k - image_k > 0.05 and facts_k <= max(both_k, age_k) + 0.05:
        parts.append("So the facts carry the VLM's gain: its result with facts is about what the facts alone give.")
    elif facts_k - image_k > 0.05:
        parts.append("The facts add to the image, and the VLM with facts does better than the facts alone.")
    else:
        parts.append("The facts do not carry the result here: the image decides about as well without them.")
    return " ".join(parts)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", help="reproduce script's eval folder (default: kept reports)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model-dir", type=Path, help="record table, threshold and evaluation in this model's steth.json")
    args = parser.parse_args(argv)
    table, rows, report = build(args.folder, args.seed)
    text = table + "\n\n" + reading(rows)
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
        meta["comparison"] = {"table": table, "note": reading(rows)}
        atomic_write_json(path, meta)
    return text


if __name__ == "__main__":
    main()
