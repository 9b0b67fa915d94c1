"""An evaluation report: its files, reading it back, and its tables.

``steth evaluate`` (:func:`steth_hub.evaluate.cross_validate`) writes ``evaluation.json`` and
``oof_predictions.csv`` with :func:`write_report`; model cards, ``steth evaluate --compare`` and
the console read them with :func:`load_report` and render them with :func:`format_table`
(the console table) and :func:`comparison_table` (Markdown, several runs).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from steth_hub import metrics
from steth_hub.errors import ConfigError

REPORT_FILE = "evaluation.json"
OOF_FILE = "oof_predictions.csv"
REPORT_FORMAT = "steth-hub-evaluation/1"


def write_report(out_dir: Path, report: dict, clips, clip_folds, oof: Mapping[str, Mapping]) -> None:
    """``evaluation.json`` and the out-of-fold clip predictions (``oof_predictions.csv``), each written atomically."""
    from steth_hub.fileio import atomic_write_json, atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "recording_id", "patient_id", "label", "fold", "start", "prob", "threshold"])
    for name, pred in oof.items():
        for i in range(len(clips)):
            writer.writerow([name, clips.recording_ids[i], clips.patient_ids[i], int(clips.labels[i]),
                             int(clip_folds[i]), f"{clips.starts[i]:.3f}", f"{pred['prob'][i]:.6f}",
                             f"{pred['threshold'][i]:.6f}"])
    atomic_write_text(out_dir / OOF_FILE, buf.getvalue())
    atomic_write_json(out_dir / REPORT_FILE, report)


def format_value(entry: Mapping | None, digits: int = 2, signed: bool = False) -> str:
    """``0.83 [0.71, 0.93]`` (``+0.12 [...]`` with ``signed``); ``n/a`` where the data could not give the metric."""
    if not entry or entry.get("value") is None:
        return "n/a"
    text = f"{entry['value']:{'+' if signed else ''}.{digits}f}"
    if entry.get("low") is not None and entry.get("high") is not None:
        text += f" [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"
    return text


METRIC_NAMES = {"auroc": "AUROC", "sensitivity": "sensitivity", "specificity": "specificity",
                "youden_j": "Youden's J", "accuracy": "accuracy"}


def subgroup_rows(report: Mapping) -> list[dict]:
    """Patient-level subgroups of a report (by source, asthma vs normal), model beside baseline.

    ``[{"name", "patients", "asthma", "auroc", "specificity", "baseline_auroc", "baseline_specificity"}]``
    with the values formatted (``0.60 [0.46, 0.74]``, ``n/a`` where a subgroup has one class).
    A model that tells the sources apart without hearing asthma scores well pooled and near 0.5
    within a source: where only one source has asthma patients, its row is the one to read.
    """
    model = report.get("model") or {}
    base = report.get("baseline") or {}
    groups = model.get("subgroups") or {}
    rows = []
    for name, entry in groups.items():
        if not isinstance(entry, Mapping):
            continue
        other = (base.get("subgroups") or {}).get(name) or {}
        rows.append({"name": name.replace("source=", "source: ").replace("asthma-vs-normal", "asthma vs normal only"),
                     "patients": entry.get("n_groups", entry.get("n")), "asthma": entry.get("n_pos"),
                     "auroc": format_value(entry.get("auroc")), "specificity": format_value(entry.get("specificity")),
                     "baseline_auroc": format_value(other.get("auroc")) if other else None,
                     "baseline_specificity": format_value(other.get("specificity")) if other else None})
    return rows


def source_warnings(report: Mapping) -> list[str]:
    """A warning for every source whose patients all have one label (as ICBHI's have no asthma in the
    shared data): pooled over sources, a model can score by recognising the source instead of the disease."""
    out = []
    groups = (report.get("model") or {}).get("subgroups") or {}
    for name, entry in groups.items():
        if not str(name).startswith("source=") or not isinstance(entry, Mapping):
            continue
        n, pos = entry.get("n_groups", entry.get("n")), entry.get("n_pos")
        if not isinstance(n, int) or not isinstance(pos, int) or len(groups) < 2:
            continue
        if pos in (0, n):
            label = "asthma" if pos else "not asthma"
            out.append(f"every patient of source {name.split('=', 1)[1]} ({n}) is {label}: the pooled figures also "
                       "reward telling the sources apart; read the within-source rows")
    return out


def format_table(report: Mapping) -> str:
    """The console table: rows level x metric; columns model, baseline and the gap between them."""
    model, base = report["model"], report.get("baseline")
    gap = report.get("gap") or {}
    header = ["level", "metric", model["name"]] + ([base["name"], "gap"] if base else [])
    rows = []
    for level in ("patient", "recording", "clip"):
        for m in metrics.METRICS:
            row = [level, METRIC_NAMES[m], format_value(model["levels"][level][m])]
            if base:
                row.append(format_value(base["levels"][level][m]))
                level_gap = gap.get(level, {})
                row.append(format_value(level_gap.get("auroc_paired"), signed=True) if m == "auroc"
                           else format_value({"value": level_gap.get(m)}, signed=True))
            rows.append(row)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    if report.get("quick"):
        lines.append("*** " + report.get("warning", "QUICK SMOKE RUN: not an evaluation result") + " ***")
    counts = report.get("counts", {})
    pats = counts.get("patients", {})
    lines.append(f"{report.get('method', 'cross-validation')}: {pats.get('total', '?')} patients "
                 f"({pats.get('asthma', '?')} asthma), {counts.get('recordings', {}).get('total', '?')} recordings, "
                 f"{counts.get('clips', {}).get('total', '?')} clips; 95% patient-bootstrap intervals "
                 f"({report.get('n_bootstrap', '?')} resamples)")
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    groups = subgroup_rows(report)
    if groups:
        lines.append("patient-level subgroups (AUROC / specificity"
                     + (f"; {base['name']} beside" if base else "") + "):")
        for g in groups:
            text = f"  {g['name']} ({g['patients']} patients, {g['asthma']} asthma): AUROC {g['auroc']}, " \
                   f"specificity {g['specificity']}"
            if g["baseline_auroc"] is not None:
                text += f" | baseline AUROC {g['baseline_auroc']}, specificity {g['baseline_specificity']}"
            lines.append(text)
    lines += [f"warning: {w}" for w in source_warnings(report)]
    lines.append(f"recommended threshold (pooled out-of-fold recordings): {report.get('recommended_threshold'):.3f}")
    return "\n".join(lines)


def load_report(path: str | os.PathLike) -> dict:
    """Read an ``evaluation.json``; errors name the file and the fix."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError("evaluation report not found", path=path, fix="pass the evaluation.json that "
                          "`steth evaluate` wrote") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the evaluation report ({exc})", path=path,
                          fix="re-run `steth evaluate` to write it again") from exc
    if not isinstance(report, dict) or not isinstance(report.get("model"), Mapping):
        raise ConfigError("not an evaluation report (no 'model' results)", path=path,
                          fix="pass the evaluation.json that `steth evaluate` wrote")
    return report


def comparison_table(reports: Iterable[Mapping | str | os.PathLike], level: str = "patient") -> str:
    """Markdown table of several runs at one level (default patient), with intervals.

    One row per run's model, then the MFCC baseline once per distinct (folds, preset) pair:
    a baseline scored on the same folds and clips in several runs is the same measurement;
    where runs differ, each baseline row names the run it stood beside. A quick run is
    marked in its row.
    """
    loaded = [load_report(r) if not isinstance(r, Mapping) else r for r in reports]
    rows: list[tuple[str, Mapping]] = []
    for report in loaded:
        suffix = " (QUICK SMOKE RUN)" if report.get("quick") else ""
        rows.append((str(report["model"]["name"]) + suffix, report["model"]))
    baselines: dict[tuple, tuple[str, Mapping]] = {}
    for report in loaded:
        if report.get("baseline"):
            key = (str(report.get("protocol", {}).get("folds_fingerprint")),
                   json.dumps(report.get("experiment", {}).get("preset"), sort_keys=True, default=str))
            baselines.setdefault(key, (str(report["model"]["name"]), report["baseline"]))
    for run_name, base in baselines.values():
        name = "MFCC + logistic regression (baseline)"
        rows.append((name + (f", beside {run_name}" if len(baselines) > 1 else ""), base))
    header = ["model"] + [METRIC_NAMES[m] for m in metrics.METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in rows:
        cells = [format_value(result["levels"][level][m]) for m in metrics.METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    methods = sorted({str(r.get("method")) for r in loaded})
    lines.append("")
    lines.append(f"{level.capitalize()}-level metrics from {'; '.join(methods)}, with 95% percentile "
                 f"bootstrap intervals over patients. Thresholds chosen on validation patients only.")
    return "\n".join(lines)
