"""Model cards: generated from a model's ``steth.json`` and its evaluation report, never typed by hand.

A card is ``README.md`` in the model folder (and on the Hub). It opens with Hub YAML metadata
(license, tags, datasets, pipeline_tag, library_name, model-index with the measured metrics) and
then says what the model is, what it is for and not for, which data made it (with demographics),
how good it is at the patient level with intervals, its limitations, how to use it, and that it
is screening support, not a diagnosis.

Every number on a card comes from one of two files:

* ``steth.json`` - threshold, preset, sample rate, and ``training`` (the data summary written by
  :func:`summarise_training_data`, the recipe, epochs, experiment name);
* the evaluation report (``evaluation.json`` from ``steth evaluate``) - metrics per level with
  bootstrap intervals, the baseline and the gap to it, and optionally a comparison table.

A model without an evaluation gets a card that says "not evaluated" instead of numbers.
The Jinja2 template is ``steth_hub/templates/model_card.md.j2``.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from steth_hub.model_folder import read_metadata
from steth_hub.errors import ModelError

TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md.j2"
LEVELS: tuple[str, ...] = ("patient", "recording", "clip")
#: metric key -> (display name, model-index metric type)
METRICS: dict[str, tuple[str, str]] = {
    "auroc": ("AUROC", "roc_auc"),
    "sensitivity": ("Sensitivity", "recall"),
    "specificity": ("Specificity", "specificity"),
    "accuracy": ("Accuracy", "accuracy"),
    "youden_j": ("Youden's J", "youden_j"),
}
TAGS: tuple[str, ...] = ("audio-classification", "medical", "respiratory-sounds", "asthma", "steth-hub")
#: facts about the corpora steth-hub imports (names, citations, licences); counts come from steth.json
SOURCES: dict[str, dict[str, str]] = {
    "kauh": {
        "id": "kauh-lung-sounds",
        "name": "KAUH lung sounds (King Abdullah University Hospital, Jordan)",
        "citation": "Fraiwan M., Fraiwan L., Khassawneh B., Ibnian A., \"A dataset of lung sounds recorded from "
                    "the chest wall using an electronic stethoscope\", Mendeley Data, doi:10.17632/jwyy9np4gv",
        "license": "CC BY 4.0",
    },
    "icbhi": {
        "id": "icbhi-2017",
        "name": "ICBHI 2017 Respiratory Sound Database",
        "citation": "Rocha B. M. et al., \"An open access database for the evaluation of respiratory sound "
                    "classification algorithms\", Physiological Measurement 40 (2019) 035001",
        "license": "see the ICBHI 2017 challenge terms",
    },
}
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("0-11", 0, 12), ("12-17", 12, 18), ("18-39", 18, 40), ("40-59", 40, 60), ("60-79", 60, 80), ("80+", 80, math.inf),
)
NOT_EVALUATED = "not evaluated"


# --------------------------------------------------------------------------- training data
def summarise_training_data(rows: Iterable[Mapping[str, Any]]) -> dict:
    """Counts of the data a model was trained on, for ``steth.json["training"]["data"]``.

    ``rows`` are corpus rows (one per recording, the columns of ``docs/architecture.md``:
    ``patient_id``, ``label``, ``sex``, ``age``, ``source``, ``device``, ``diagnosis_normalised``)
    or a ``datasets.Dataset`` of them. Patient facts (sex, age band, label, diagnosis) are counted once
    per patient; sources and devices per recording. The ``audio`` and ``annotation`` columns are
    never read.
    """
    wanted = ["patient_id", "label", "sex", "age", "source", "device", "diagnosis_normalised"]
    if hasattr(rows, "select_columns") and hasattr(rows, "column_names"):
        rows = rows.select_columns([c for c in wanted if c in rows.column_names])
    patients: dict[str, dict] = {}
    by_source: Counter = Counter()
    by_device: Counter = Counter()
    rec_labels: Counter = Counter()
    n_recordings = 0
    for row in rows:
        n_recordings += 1
        pid = str(row.get("patient_id"))
        label = _label_name(row.get("label"))
        rec_labels[label] += 1
        by_source[str(row.get("source") or "unknown")] += 1
        by_device[str(row.get("device") or "unknown")] += 1
        info = patients.setdefault(pid, {"labels": set(), "sex": None, "age": None, "diagnosis": None})
        info["labels"].add(label)
        info["sex"] = info["sex"] or row.get("sex")
        if info["age"] is None and row.get("age") is not None:
            info["age"] = float(row["age"])
        info["diagnosis"] = info["diagnosis"] or row.get("diagnosis_normalised")
    ages = [p["age"] for p in patients.values() if p["age"] is not None and not math.isnan(p["age"])]
    bands: Counter = Counter()
    for p in patients.values():
        bands[_age_band(p["age"])] += 1
    order = [name for name, _, _ in AGE_BANDS] + ["unknown"]
    return {
        "n_patients": len(patients),
        "n_recordings": n_recordings,
        "labels": {
            "patients": dict(sorted(Counter("asthma" if "asthma" in p["labels"] else "not_asthma"
                                            for p in patients.values()).items())),
            "recordings": dict(sorted(rec_labels.items())),
        },
        "sex": dict(sorted(Counter(str(p["sex"] or "unknown") for p in patients.values()).items())),
        "age_bands": {band: bands[band] for band in order if bands.get(band)},
        "age_range": [min(ages), max(ages)] if ages else None,
        "sources": dict(sorted(by_source.items())),
        "devices": dict(sorted(by_device.items())),
        "diagnoses": dict(sorted(Counter(str(p["diagnosis"] or "unknown") for p in patients.values()).items())),
    }


def _label_name(label: Any) -> str:
    if isinstance(label, str):
        return "asthma" if label.strip().lower() in {"1", "asthma"} else "not_asthma"
    return "asthma" if label is not None and int(label) == 1 else "not_asthma"


def _age_band(age: float | None) -> str:
    if age is None or math.isnan(age):
        return "unknown"
    for name, low, high in AGE_BANDS:
        if low <= age < high:
            return name
    return "unknown"


# --------------------------------------------------------------------------- evaluation reports
def load_evaluation(evaluation: Mapping | str | os.PathLike | None) -> dict | None:
    """An evaluation report (``evaluation.json`` of ``steth evaluate``) from a dict or a file; ``None`` stays ``None``."""
    if evaluation is None:
        return None
    if isinstance(evaluation, Mapping):
        return dict(evaluation)
    from steth_hub.evaluation_report import load_report

    report = load_report(evaluation)
    report.setdefault("_source", Path(evaluation).name)
    return report


def _level_rows(levels: Any) -> dict[str, list[dict]]:
    """``{level: [{"metric", "name", "type", "value", "low", "high", "text"}]}`` for the measured metrics."""
    from steth_hub.evaluation_report import format_value

    out: dict[str, list[dict]] = {}
    if not isinstance(levels, Mapping):
        return out
    for level in LEVELS:
        block = levels.get(level)
        if not isinstance(block, Mapping):
            continue
        rows = []
        for metric, (label, mtype) in METRICS.items():
            entry = block.get(metric)
            if isinstance(entry, Mapping) and entry.get("value") is not None:
                rows.append({"metric": metric, "name": label, "type": mtype, "value": float(entry["value"]),
                             "low": entry.get("low"), "high": entry.get("high"), "text": format_value(entry)})
        if rows:
            out[level] = rows
    return out


def evaluation_summary(report: Mapping | None) -> dict | None:
    """What the card shows of an evaluation report; ``None`` when it holds no measured metric.

    Reads the report format of :mod:`steth_hub.evaluate` (``steth-hub-evaluation/1``): the model's
    and the baseline's metrics per level with intervals, the gap (model minus baseline; the AUROC gap
    with its paired patient-bootstrap interval), the method, counts and the quick-run flag.
    """
    if not report or not isinstance(report.get("model"), Mapping):
        return None
    from steth_hub.evaluation_report import format_value, subgroup_rows

    levels = _level_rows(report["model"].get("levels"))
    if not levels:
        return None
    base = report.get("baseline")
    baseline = None
    if isinstance(base, Mapping) and _level_rows(base.get("levels")):
        name = str(base.get("name") or base.get("classifier") or "baseline")
        baseline = {"name": name if "baseline" in name.lower() else f"{name} (baseline)",
                    "levels": _level_rows(base.get("levels"))}
    gap = []
    patient_gap = (report.get("gap") or {}).get("patient") or {}
    for metric, (label, _) in METRICS.items():
        entry = patient_gap.get("auroc_paired") if metric == "auroc" else None
        if not isinstance(entry, Mapping) or entry.get("value") is None:
            value = patient_gap.get(metric)
            entry = {"value": value} if isinstance(value, (int, float)) else None
        if entry:
            gap.append({"name": label, "text": format_value(entry, signed=True)})
    counts = report.get("counts") if isinstance(report.get("counts"), Mapping) else {}
    return {
        "name": report["model"].get("name"),
        "method": str(report.get("method") or "patient-grouped cross-validation"),
        "n_bootstrap": report.get("n_bootstrap"),
        "levels": levels,
        "baseline": baseline,
        "gap": gap,
        "comparison": None,
        "recommended_threshold": report.get("recommended_threshold"),
        "subgroups": subgroup_rows(report),
        "counts": {key: dict(counts.get(key) or {}) for key in ("patients", "recordings", "clips")},
        "quick": bool(report.get("quick")),
        "warning": report.get("warning"),
        "source": report.get("_source"),
    }


def comparison_markdown(comparison: Any) -> str | None:
    """A Markdown comparison table: given as text, or built by :func:`steth_hub.evaluation_report.comparison_table`
    from evaluation reports (a list of reports or paths, or ``{name: report}``) at the patient level."""
    if not comparison:
        return None
    if isinstance(comparison, str):
        return comparison.strip()
    from steth_hub.evaluation_report import comparison_table

    reports = list(comparison.values()) if isinstance(comparison, Mapping) else list(comparison)
    return comparison_table(reports, level="patient")


# --------------------------------------------------------------------------- the card
def _training_data(training: Mapping) -> tuple[dict, list[str]]:
    """The training-data facts of ``steth.json``: ``training["data"]`` or ``training["corpus"]["data"]``
    (:func:`summarise_training_data`) when present, else the counts that ``steth train`` records (``training["corpus"]``, its
    ``corpus.json`` info and the label counts). Returns ``(data, source names)``."""
    corpus = training.get("corpus") if isinstance(training.get("corpus"), Mapping) else {}
    data = training.get("data") or corpus.get("data")
    if isinstance(data, Mapping):
        return dict(data), []
    info = corpus.get("info") if isinstance(corpus.get("info"), Mapping) else {}
    kinds = info.get("kinds") or ([info["source"]] if info.get("source") in SOURCES else [])
    data = {}
    patients, recordings = corpus.get("patients_by_label"), corpus.get("recordings_by_label")
    if isinstance(patients, Mapping) and isinstance(recordings, Mapping):
        data["labels"] = {"patients": dict(patients), "recordings": dict(recordings)}
        data["n_patients"], data["n_recordings"] = sum(patients.values()), sum(recordings.values())
    return data, [str(k) for k in kinds]


def _recorded_comparison(recorded: Mapping) -> str | None:
    """The comparison ``steth.json`` carries (``{"table": markdown, "note": ...}``), as Markdown."""
    table = recorded.get("table")
    if not isinstance(table, str) or not table.strip():
        return None
    note = recorded.get("note")
    return table.strip() + (f"\n\n{note.strip()}" if isinstance(note, str) and note.strip() else "")


def card_context(meta: Mapping, evaluation: Mapping | None = None, *, name: str | None = None,
                 comparison: Any = None, repo_id: str | None = None,
                 model_dir: str | os.PathLike | None = None) -> dict:
    """Everything the template shows, from ``steth.json``, the evaluation report and (for the
    parameter count only) the header of ``model_dir/model.safetensors``."""
    training = meta.get("training") if isinstance(meta.get("training"), Mapping) else {}
    data, source_keys = _training_data(training)
    summary = evaluation_summary(evaluation)
    if summary is None and isinstance(meta.get("evaluation"), Mapping):
        summary = evaluation_summary(meta["evaluation"])
    if comparison is None and isinstance(meta.get("comparison"), Mapping):
        comparison = _recorded_comparison(meta["comparison"])  # what steth train recorded
    if summary is not None and comparison is not None:
        summary["comparison"] = comparison_markdown(comparison)
    sources = sorted((data.get("sources") or {}).keys()) or source_keys
    preset = meta.get("preset") if isinstance(meta.get("preset"), Mapping) else {}
    recipe = training.get("recipe") if isinstance(training.get("recipe"), Mapping) else None
    experiment = training.get("experiment")
    if isinstance(experiment, Mapping):
        experiment = experiment.get("name")
    model_name = name or meta.get("name") or experiment or meta.get("plugin") or "steth-hub model"
    # what the classifier says it is (Classifier.card_facts, stored in steth.json when it was saved)
    facts = dict(meta["card_facts"]) if isinstance(meta.get("card_facts"), Mapping) else {}
    return {
        "name": str(model_name),
        "usage_name": repo_id or (str(meta["name"]) if str(meta.get("name") or "").startswith("steth/")
                                  else "path/to/model-folder"),
        "plugin": meta.get("plugin"),
        "distribution": meta.get("distribution"),
        "threshold": float(meta["threshold"]) if isinstance(meta.get("threshold"), (int, float)) else None,
        "sample_rate": meta.get("sample_rate"),
        "labels": meta.get("labels") or ["not_asthma", "asthma"],
        "version": meta.get("steth_hub_version"),
        "preset": preset,
        "preset_name": preset.get("name") if preset else None,
        "preset_json": json.dumps(preset, indent=2, ensure_ascii=False, default=str) if preset else None,
        "recipe_json": json.dumps(recipe, indent=2, ensure_ascii=False, default=str) if recipe else None,
        "epochs": (f"{round(float(training['epochs']), 1):g}" if isinstance(training.get("epochs"), (int, float))
                   else training.get("epochs")),
        "threshold_method": training.get("threshold_method") or training.get("threshold_from"),
        "experiment": experiment,
        "data": data,
        "sources": [{"key": s, **SOURCES.get(s, {"name": s, "citation": None, "license": None})} for s in sources],
        "age_range": data.get("age_range"),
        "evaluation": summary,
        "facts": facts,
        # federated provenance (steth_hub/federated writes it): clinics, rounds, patients per clinic (counts only)
        "federated": dict(meta["federated"]) if isinstance(meta.get("federated"), Mapping) else None,
        "is_transformers": facts.get("library") == "transformers",
        "not_evaluated": NOT_EVALUATED,
        "license": meta.get("license") or "apache-2.0",
        # model-specific findings (e.g. from its explanation maps), added to the generic limitations
        "limitations": _limitations(meta.get("limitations")),
        "stability_checks": _stability_checks(meta.get("stability_checks")),
        "front_end_rate": facts.get("front_end_rate"),
        "front_end_bins": facts.get("front_end_bins"),
        "description": (training["experiment"].get("description") if isinstance(training.get("experiment"), Mapping)
                        else None),
        "pretrain_epochs": ((recipe or {}).get("pretrain") or {}).get("epochs") if recipe else None,
        "freeze_encoder": bool((recipe or {}).get("freeze_encoder")),
        "n_parameters": (facts["parameters"] if isinstance(facts.get("parameters"), int)
                         else _count_parameters(model_dir) if model_dir is not None else None),
    }


def _count_parameters(model_dir) -> int | None:
    """Parameters in ``model.safetensors``, from its JSON header alone (no torch, no weights read)."""
    path = Path(model_dir) / "model.safetensors"
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100 * 2**20:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return None
    total = 0
    for key, entry in header.items():
        if key == "__metadata__" or not isinstance(entry, Mapping) or _is_buffer(key):
            continue
        total += math.prod(int(d) for d in entry.get("shape") or [])
    return total or None


#: tensors a model stores that are not learnt parameters: batch-norm statistics, feature scalers
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
BUFFER_PREFIXES = ("scaler_",)


def _is_buffer(key: str) -> bool:
    name = key.rsplit(".", 1)[-1]
    return name.endswith(BUFFER_SUFFIXES) or name.startswith(BUFFER_PREFIXES)


def _stability_checks(value) -> list[str]:
    """``steth.json["stability_checks"]`` in words (none when absent or not valid)."""
    from steth_hub.errors import StethError
    from steth_hub.stability import check_list, describe

    if value is None:
        return []
    try:
        return [describe(kind, amount) for kind, amount in check_list(value)]
    except StethError:
        return []


def _limitations(value: Any) -> list[str]:
    """``steth.json["limitations"]``: a list of Markdown items (a single string is one item)."""
    items = [value] if isinstance(value, str) else list(value or []) if isinstance(value, (list, tuple)) else []
    return [str(x).strip() for x in items if str(x).strip()]


def card_metadata(context: Mapping) -> dict:
    """The card's YAML front matter: Hub metadata with a model-index of the measured metrics only."""
    meta: dict[str, Any] = {
        "license": context["license"],
        "library_name": "transformers" if context["is_transformers"] else "steth-hub",
        "pipeline_tag": "audio-classification",
        "tags": list(TAGS) + ([f"steth-plugin-{context['plugin']}"] if context.get("plugin") else []),
    }
    if context["sources"]:
        meta["datasets"] = [s.get("id", s["key"]) for s in context["sources"]]
    evaluation = context.get("evaluation")
    if evaluation and not evaluation.get("quick"):  # a --quick smoke run is not a result to index
        results = []
        dataset = {"type": "+".join(s["key"] for s in context["sources"]) or "custom",
                   "name": " + ".join(s.get("name", s["key"]) for s in context["sources"]) or "steth-hub corpus",
                   "split": evaluation["method"]}
        for level in LEVELS:
            metrics = [{"name": f"{level.capitalize()}-level {row['name']}" + _interval_note(row),
                        "type": row["type"], "value": round(row["value"], 4)}
                       for row in evaluation["levels"].get(level, [])]
            if metrics:
                results.append({"task": {"type": "audio-classification",
                                         "name": f"Asthma screening ({level} level)"},
                                "dataset": dict(dataset), "metrics": metrics})
        if results:
            meta["model-index"] = [{"name": context["name"], "results": results}]
    return meta


def _interval_note(row: Mapping) -> str:
    if row.get("low") is None or row.get("high") is None:
        return ""
    return f" (95% CI {row['low']:.2f}-{row['high']:.2f})"


def render_card(model_dir: str | os.PathLike, evaluation: Mapping | str | os.PathLike | None = None, *,
                name: str | None = None, comparison: Any = None, repo_id: str | None = None) -> str:
    """The model card (Markdown with YAML front matter) of the model in ``model_dir``.

    ``evaluation`` is the report of ``steth evaluate`` (dict or path); when omitted,
    ``model_dir/evaluation.json`` is used if present, else ``steth.json``'s ``evaluation``.
    ``comparison`` is a Markdown table, or ``{name: report}`` to build one (patient level).
    ``repo_id`` is the name the usage examples load (default: the folder's name or a placeholder).
    """
    import yaml

    model_dir = Path(model_dir)
    meta = read_metadata(model_dir)
    if evaluation is None and (model_dir / "evaluation.json").is_file():
        evaluation = model_dir / "evaluation.json"
    context = card_context(meta, load_evaluation(evaluation), name=name or _default_name(model_dir, meta),
                           comparison=comparison, repo_id=repo_id, model_dir=model_dir)
    front = yaml.safe_dump(card_metadata(context), sort_keys=False, allow_unicode=True, width=1000)
    return _template().render(front_matter=front.strip(), **context).strip() + "\n"


def _default_name(model_dir: Path, meta: Mapping) -> str | None:
    if meta.get("name"):
        return str(meta["name"])
    if model_dir.name and not model_dir.name.startswith((".", "tmp", "steth-")):
        return model_dir.name
    return None


def _template():
    import jinja2

    if not TEMPLATE.is_file():
        raise ModelError("the model card template is missing from this installation", path=TEMPLATE,
                         fix="reinstall steth-hub")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)), autoescape=False,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["fmt"] = lambda v, digits=2: "n/a" if v is None else f"{v:.{digits}f}"
    return env.get_template(TEMPLATE.name)


def write_card(model_dir: str | os.PathLike, evaluation: Mapping | str | os.PathLike | None = None, *,
               out: str | os.PathLike | None = None, copy_to: str | os.PathLike | None = None,
               name: str | None = None, comparison: Any = None, repo_id: str | None = None) -> Path:
    """Render the card and write it atomically to ``out`` (default ``model_dir/README.md``).

    ``copy_to`` also writes it there (a file, or a folder such as ``model_cards/`` where it becomes
    ``<name>.md``). Returns the path written first.
    """
    from steth_hub.fileio import atomic_write_text

    model_dir = Path(model_dir)
    text = render_card(model_dir, evaluation, name=name, comparison=comparison, repo_id=repo_id)
    target = Path(out) if out is not None else model_dir / "README.md"
    atomic_write_text(target, text)
    if copy_to is not None:
        copy_to = Path(copy_to)
        if copy_to.is_dir() or not copy_to.suffix:
            card_name = name or _default_name(model_dir, read_metadata(model_dir)) or "model"
            copy_to = copy_to / f"{card_name.rstrip('/').split('/')[-1]}.md"  # "steth/ast-asthma" -> ast-asthma.md
        atomic_write_text(copy_to, text)
    return target

