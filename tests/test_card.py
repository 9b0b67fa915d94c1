"""steth_hub.card: cards generated from steth.json and a real evaluation report, with valid Hub metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from steth_hub.card import evaluation_summary, render_card, summarise_training_data, write_card
from steth_hub.cli import main
from steth_hub.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def example_corpus(tmp_path_factory, examples_dir):
    """The KAUH example recordings shipped with the package, imported as a corpus."""
    from steth_hub.corpus import import_corpus, load_corpus

    out = tmp_path_factory.mktemp("corpus") / "kauh-examples"
    import_corpus("kauh", examples_dir / "kauh", out, n_folds=2, progress=False)
    return load_corpus(out)


@pytest.fixture(scope="module")
def real_evaluation(tmp_path_factory, shared_data) -> Path:
    """evaluation.json of a real patient-grouped cross-validation: the MFCC + logistic-regression
    classifier on 20 KAUH patients (10 asthma, 10 normal; one bell recording each, two 4 s clips)."""
    import numpy as np

    from steth_hub.audio import decode
    from steth_hub.clips import Clip, ClipSet
    from steth_hub.corpus import asthma_label, normalise_diagnosis
    from steth_hub.corpus.kauh import parse_kauh_name
    from steth_hub.evaluate import cross_validate_clips

    chosen: dict[str, dict[str, tuple]] = {"asthma": {}, "normal": {}}
    for path in sorted((shared_data / "kauh").glob("BP*.wav")):
        meta = parse_kauh_name(path.name)
        diagnosis = normalise_diagnosis(meta["diagnosis"])
        if diagnosis in chosen and len(chosen[diagnosis]) < 10:
            chosen[diagnosis].setdefault(meta["patient_id"], (path, meta, asthma_label(diagnosis)))
    clips, labels, patients = [], [], []
    for path, meta, label in [v for group in chosen.values() for v in group.values()]:
        samples = decode(path).resampled(4000).samples
        for i in range(2):
            clips.append(Clip(samples[i * 16000:(i + 1) * 16000], 4000, meta["recording_id"], 4.0 * i, i))
            labels.append(label)
            patients.append(meta["patient_id"])
    assert len(set(patients)) == 20 and int(np.sum(labels)) == 20
    out = tmp_path_factory.mktemp("evaluation")
    cross_validate_clips(ClipSet.from_clips(clips, labels, patients), {"name": "mfcc-card", "classifier": "mfcc-logreg"},
                         n_folds=3, out_dir=out, baseline=False, n_bootstrap=200, progress=False)
    return out / "evaluation.json"


@pytest.fixture
def model_dir(tmp_path, example_corpus) -> Path:
    """A model folder's steth.json (the card needs nothing else), with the real training-data summary."""
    folder = tmp_path / "mfcc-card"
    folder.mkdir()
    meta = {"plugin": "mfcc-logreg", "threshold": 0.4321, "sample_rate": 4000,
            "preset": {"name": "excerpt-10s", "steps": [["resample", {"sample_rate": 4000}]]},
            "labels": ["not_asthma", "asthma"], "steth_hub_version": "0.1.0", "distribution": "steth-hub",
            "training": {"experiment": "mfcc-card", "epochs": 1, "recipe": {"C": 1.0},
                         "data": summarise_training_data(example_corpus.dataset)}}
    (folder / "steth.json").write_text(json.dumps(meta))
    return folder


def front_matter(text: str) -> dict:
    """The card's YAML metadata as huggingface_hub parses it."""
    from huggingface_hub import ModelCard

    return ModelCard(text).data.to_dict()


# --------------------------------------------------------------------------- tests
def test_training_data_summary_counts_patients_and_recordings(example_corpus):
    # the five KAUH examples: BP64 asthma 60 M, DP72 normal 24 F, EP13 heart failure 55 M,
    # EP32 normal 30 M, EP38 asthma 38 M - one recording per patient
    data = summarise_training_data(example_corpus.dataset)
    assert data["n_patients"] == 5 and data["n_recordings"] == 5
    assert data["labels"] == {"patients": {"asthma": 2, "not_asthma": 3}, "recordings": {"asthma": 2, "not_asthma": 3}}
    assert data["sex"] == {"F": 1, "M": 4}
    assert data["age_bands"] == {"18-39": 3, "40-59": 1, "60-79": 1}
    assert data["age_range"] == [24.0, 60.0]
    assert data["sources"] == {"kauh": 5}
    assert data["devices"] == {"kauh-bell": 1, "kauh-diaphragm": 1, "kauh-extended": 3}
    assert data["diagnoses"] == {"asthma": 2, "heart failure": 1, "normal": 2}


def test_card_from_a_real_evaluation_carries_its_numbers_and_valid_hub_metadata(model_dir, real_evaluation):
    from huggingface_hub import ModelCard

    from steth_hub.evaluate import format_value

    report = json.loads(real_evaluation.read_text())
    text = render_card(model_dir, real_evaluation)
    patient = report["model"]["levels"]["patient"]
    for metric in ("auroc", "sensitivity", "specificity", "youden_j", "accuracy"):
        assert format_value(patient[metric]) in text  # e.g. "0.80 [0.57, 0.97]" from the report
    for level in ("recording", "clip"):
        assert format_value(report["model"]["levels"][level]["auroc"]) in text
    assert report["method"] in text and "200 resamples" in text

    meta = front_matter(text)
    assert meta["license"] == "apache-2.0" and meta["pipeline_tag"] == "audio-classification"
    assert {"audio-classification", "medical", "respiratory-sounds", "asthma", "steth-hub"} <= set(meta["tags"])
    assert meta["datasets"] == ["kauh-lung-sounds"]
    card = ModelCard(text)
    results = {(r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("Asthma screening (patient level)", "roc_auc")] == pytest.approx(patient["auroc"]["value"], abs=1e-4)
    assert results[("Asthma screening (patient level)", "recall")] == pytest.approx(patient["sensitivity"]["value"],
                                                                                     abs=1e-4)
    assert len([k for k in results if k[0].startswith("Asthma screening (clip")]) == 5

    # the sections a card must have, and what it must say
    for heading in ("## What it is", "## Intended use", "## Out-of-scope use", "## Training data",
                    "## Evaluation", "## Limitations and biases", "## How to use", "## Citation"):
        assert heading in text
    assert text.count("Screening support, not a diagnosis") >= 2
    assert "0.432" in text  # the threshold from steth.json
    assert "24–60 years" in text  # the training ages from the data summary
    assert "never** a model input" in text and "Sample-rate confound" in text


def test_card_of_a_folder_written_by_steth_train(example_corpus, tmp_path):
    """``steth train`` records who the model learnt from (counts, sex, ages, sources), and the card shows it."""
    from steth_hub.experiment import train_experiment

    out = tmp_path / "trained"
    train_experiment({"name": "mfcc-trained", "classifier": "mfcc-logreg"}, example_corpus, out, progress=False)
    meta = json.loads((out / "steth.json").read_text())
    assert meta["training"]["corpus"]["data"] == summarise_training_data(example_corpus.dataset)
    text = render_card(out)
    assert text.startswith("---\n") and "# trained" in text
    assert "5 patients, 5 recordings." in text
    assert "| asthma | 2 | 2 |" in text and "| not_asthma | 3 | 3 |" in text
    assert "doi:10.17632/jwyy9np4gv" in text  # the KAUH source, from the corpus info
    assert "Experiment `mfcc-trained`" in text
    assert "How the decision threshold" in text and "**Not evaluated.**" in text
    assert front_matter(text)["datasets"] == ["kauh-lung-sounds"]
    assert "| Sex | patients |" in text and "| F | 1 |" in text and "24–60 years" in text
    assert "no recorded age" not in text  # every example patient has an age

    # patients without an age (ICBHI without its demographics file) are said to be outside the range
    data = meta["training"]["corpus"]["data"]
    data["age_bands"]["unknown"] = 2
    (out / "steth.json").write_text(json.dumps(meta))
    assert "(2 of the 5 training patients have no recorded age" in render_card(out)

    # a steth.json from before the summary was recorded: the counts alone still make the card
    del meta["training"]["corpus"]["data"]
    (out / "steth.json").write_text(json.dumps(meta))
    text = render_card(out)
    assert "5 patients, 5 recordings." in text and "| asthma | 2 | 2 |" in text
    assert "| Sex | patients |" not in text  # no demographics recorded, none shown


def test_a_model_without_evaluation_is_marked_not_evaluated(model_dir):
    text = render_card(model_dir)
    assert "**Not evaluated.**" in text
    meta = front_matter(text)
    assert "model-index" not in meta  # no invented numbers
    assert "AUROC" not in text


def test_baseline_and_gap_come_from_the_report(model_dir, real_evaluation):
    from steth_hub.evaluate import format_value

    report = json.loads(real_evaluation.read_text())
    # the same real results presented as a second contender and its gap, as a report with a baseline has them
    report["baseline"] = dict(report["model"], name="mfcc-logreg (baseline)")
    report["gap"] = {"patient": {"auroc": 0.0, "auroc_paired": {"value": 0.0, "low": -0.05, "high": 0.05}}}
    summary = evaluation_summary(report)
    assert summary["baseline"]["name"] == "mfcc-logreg (baseline)"
    text = render_card(model_dir, report)
    assert "| metric | mfcc-card | mfcc-logreg (baseline) |" in text
    row = [line for line in text.splitlines() if line.startswith("| AUROC |")][0]
    assert row.count(format_value(report["model"]["levels"]["patient"]["auroc"])) == 2
    assert "AUROC +0.00 [-0.05, 0.05]" in text


def test_steth_card_writes_readme_atomically_and_copies_it(model_dir, real_evaluation, tmp_path):
    cards = tmp_path / "model_cards"
    cards.mkdir()
    result = CliRunner().invoke(main, ["card", str(model_dir), "--evaluation", str(real_evaluation),
                                       "--compare", str(real_evaluation), "--copy-to", str(cards)])
    assert result.exit_code == 0, result.output
    readme = (model_dir / "README.md").read_text()
    assert readme == (cards / "mfcc-card.md").read_text()
    assert "### Comparison (patient level, same folds)" in readme
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no temporary left behind

    # a bad evaluation file: a clear error, and the card already there is left as it was
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = CliRunner().invoke(main, ["card", str(model_dir), "--evaluation", str(broken)])
    assert result.exit_code == 2 and "broken.json" in result.output and "steth evaluate" in result.output
    assert (model_dir / "README.md").read_text() == readme
    with pytest.raises(ConfigError):
        write_card(model_dir, broken)


def test_compare_puts_the_evaluation_stored_in_steth_json_first(model_dir, real_evaluation, tmp_path):
    """A model whose evaluation lives in steth.json (as `steth train --evaluation` stores it): --compare adds
    rows after its own, it does not replace them."""
    meta = json.loads((model_dir / "steth.json").read_text())
    own = json.loads(real_evaluation.read_text())
    meta["evaluation"] = own
    (model_dir / "steth.json").write_text(json.dumps(meta))
    other = json.loads(real_evaluation.read_text())
    other["model"] = dict(other["model"], name="another-run")
    other_path = tmp_path / "another.evaluation.json"
    other_path.write_text(json.dumps(other))
    result = CliRunner().invoke(main, ["card", str(model_dir), "--compare", str(other_path)])
    assert result.exit_code == 0, result.output
    table = (model_dir / "README.md").read_text().split("### Comparison (patient level, same folds)")[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith(f"| {own['model']['name']} |") and rows[1].startswith("| another-run |"), rows


def test_evaluation_json_beside_the_model_is_used_by_default(model_dir, real_evaluation):
    (model_dir / "evaluation.json").write_text(real_evaluation.read_text())
    assert "**Not evaluated.**" not in render_card(model_dir)
    assert "evaluation.json" in render_card(model_dir).splitlines()[-2]


def test_the_model_cards_template_is_the_packaged_one():
    linked = REPO / "model_cards" / "model_card.md.j2"
    packaged = REPO / "steth_hub" / "templates" / "model_card.md.j2"
    assert linked.read_text() == packaged.read_text()


def test_shipped_model_cards_match_their_models():
    from steth_hub.hub import EMBEDDED

    folder = EMBEDDED["steth/ast-asthma"]
    shipped = REPO / "model_cards" / "ast-asthma.md"
    if not (folder / "steth.json").is_file():
        pytest.skip("the embedded model is not trained yet, so it has no card")
    assert shipped.is_file(), "generate it: steth card steth_hub/models/ast-asthma --copy-to model_cards/"
    assert shipped.read_text() == (folder / "README.md").read_text()
    assert shipped.read_text() == render_card(folder)  # regenerated, never edited by hand


def test_the_comparison_steth_train_recorded_is_shown_and_cards_copy_under_the_last_name_part(model_dir, tmp_path,
                                                                                          real_evaluation):
    meta = json.loads((model_dir / "steth.json").read_text())
    meta["comparison"] = {"level": "patient", "table": "| model | AUROC |\n|---|---|\n| other-model | 0.61 [0.50, 0.70] |",
                          "note": "Same folds as this model."}
    (model_dir / "steth.json").write_text(json.dumps(meta))
    text = render_card(model_dir, real_evaluation)
    assert "| other-model | 0.61 [0.50, 0.70] |" in text and "Same folds as this model." in text
    cards = tmp_path / "model_cards"
    cards.mkdir()
    write_card(model_dir, real_evaluation, name="steth/some-model", copy_to=cards)
    assert [p.name for p in cards.iterdir()] == ["some-model.md"]


def test_readme_results_table_is_the_kept_reports_and_quotes_the_default_models_own_evaluation():
    """The README's results table is configs/encoder_table.py's output on configs/results/ (no hand-typed
    number), and the default model's steth.json evaluation is its fold-seed-0 row."""
    import runpy

    from steth_hub.evaluate import format_value
    from steth_hub.hub import DEFAULT_MODEL, EMBEDDED

    script = runpy.run_path(str(REPO / "configs" / "encoder_table.py"))
    expected = script["main"]([str(REPO / "configs" / "results")]).strip().split("\n\nMean")[0]
    readme = (REPO / "README.md").read_text()
    table = readme.split("<!-- results-table -->")[1].split("<!-- /results-table -->")[0].strip()
    assert table == expected
    meta = json.loads((EMBEDDED[DEFAULT_MODEL] / "steth.json").read_text())
    model = meta["evaluation"]["model"]
    row = next(line for line in table.splitlines() if line.startswith("| efficientat-asthma | 0 |"))
    assert format_value(model["subgroups"]["source=kauh"]["auroc"]) in row  # within KAUH first
    for metric in ("auroc", "sensitivity", "specificity"):
        assert format_value(model["levels"]["patient"][metric]) in row, (metric, row)


def test_model_specific_limitations_and_the_front_end_note(model_dir):
    meta = json.loads((model_dir / "steth.json").read_text())
    text = render_card(model_dir)
    assert "front end works at" not in text  # not an AST
    # what an AST declares about itself (ASTClassifier.card_facts, stored in steth.json)
    meta.update(plugin="ast", limitations=["**Device shortcut.** Scores follow the stethoscope.", "  "],
                card_facts={"library": "transformers", "front_end_rate": 4000, "front_end_bins": 64})
    (model_dir / "steth.json").write_text(json.dumps(meta))
    text = render_card(model_dir)
    limitations = text.split("## Limitations and biases")[1].split("## How to use")[0]
    assert "- **Device shortcut.** Scores follow the stethoscope." in limitations
    assert "\n-   \n" not in limitations and "\n- \n" not in limitations  # blank items dropped
    assert "front end works at 4000 Hz" in text and "torchaudio" in text
    meta["card_facts"]["front_end_rate"] = 16000  # the usual AST front end: nothing to warn about
    (model_dir / "steth.json").write_text(json.dumps(meta))
    assert "front end works at" not in render_card(model_dir)


def test_card_says_what_the_network_is_and_how_it_was_trained(model_dir):
    import numpy as np
    from safetensors.numpy import save_file

    meta = json.loads((model_dir / "steth.json").read_text())
    meta["training"].update(experiment={"name": "two-stage", "description": "A tiny AST for a test."}, epochs=3.25,
                            recipe={"pretrain": {"epochs": 30}, "freeze_encoder": True})
    (model_dir / "steth.json").write_text(json.dumps(meta))
    save_file({"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float32)}, str(model_dir / "model.safetensors"))
    text = render_card(model_dir)
    assert "A tiny AST for a test." in text and "| parameters | 17 |" in text
    assert ("Experiment `two-stage`: 30 epochs of self-supervised pretraining of the whole network (no labels), "
            "then 3.2 epochs on the labels (classification head only, encoder frozen).") in text
    meta["training"]["recipe"] = {}
    (model_dir / "steth.json").write_text(json.dumps(meta))
    assert "Experiment `two-stage`: 3.2 epochs on the labels." in render_card(model_dir)


def test_card_shows_the_metrics_within_each_source(model_dir, real_evaluation):
    """Pooled figures flatter a model that tells the corpora apart: the card gives them by source."""
    from steth_hub.evaluate import format_value

    report = json.loads(real_evaluation.read_text())
    within = {"n": 20, "n_pos": 4, "n_groups": 10, "auroc": {"value": 0.55, "low": 0.3, "high": 0.8},
              "specificity": {"value": 0.4, "low": 0.1, "high": 0.7}}
    other = {"n": 7, "n_pos": 0, "n_groups": 7, "auroc": {"value": None, "low": None, "high": None},
             "specificity": {"value": 1.0, "low": 1.0, "high": 1.0}}
    report["model"]["subgroups"] = {"source=kauh": within, "source=icbhi": other}
    text = render_card(model_dir, report)
    section = text.split("### By source (patient level)")[1].split("###")[0]
    assert f"| source: kauh | 10 (4) | {format_value(within['auroc'])} | {format_value(within['specificity'])} |" \
        in section
    assert "| source: icbhi | 7 (0) | n/a | 1.00 [1.00, 1.00] |" in section
    del report["model"]["subgroups"]
    assert "### By source" not in render_card(model_dir, report)


def test_card_edge_cases_from_hand_written_steth_json(model_dir):
    """A single limitation string, whole epochs, buffers in the weights, an AST whose front end runs at the clips' rate."""
    import numpy as np
    from safetensors.numpy import save_file

    meta = json.loads((model_dir / "steth.json").read_text())
    meta.update(limitations="Relies on the device.", plugin="ast", sample_rate=8000,
                card_facts={"library": "transformers", "front_end_rate": 8000})
    meta["training"]["epochs"] = 60.0
    (model_dir / "steth.json").write_text(json.dumps(meta))
    save_file({"coef": np.zeros((1, 80), np.float32), "intercept": np.zeros(1, np.float32),
               "scaler_mean": np.zeros(80, np.float32), "scaler_scale": np.ones(80, np.float32),
               "bn.running_mean": np.zeros(4, np.float32), "bn.running_var": np.ones(4, np.float32),
               "bn.num_batches_tracked": np.zeros((), np.int64)}, str(model_dir / "model.safetensors"))
    text = render_card(model_dir)
    assert "- Relies on the device." in text and "\n- R\n" not in text
    assert "60 epochs on the labels" in text and "60.0 epochs" not in text
    assert "| parameters | 81 |" in text  # coef + intercept; scalers and batch-norm statistics are not learnt
    assert "front end works at 8000 Hz" in text



def test_card_states_the_federated_provenance_counts_only(model_dir):
    meta = json.loads((model_dir / "steth.json").read_text())
    assert "Federated training" not in render_card(model_dir)
    meta["federated"] = {"strategy": "fedavg", "rounds": 3, "local_epochs": 1.0, "clinics": 2,
                         "patients_per_clinic": [61, 20], "asthma_patients_per_clinic": [20, 0],
                         "differential_privacy": {"mechanism": "Gaussian", "noise_multiplier": 0.3, "clipping_norm": 1.0}}
    (model_dir / "steth.json").write_text(json.dumps(meta))
    text = render_card(model_dir)
    assert "across 2 clinics for\n3 rounds" in text and "Patients per clinic: 61, 20" in text
    assert "noise multiplier 0.3" in text and "\n\n## Intended use" in text
