"""Issue 13: a model card counts what the model was fitted on, and never indexes a --quick smoke run."""

from __future__ import annotations

import json

import pytest
import yaml

from steth_hub.card import render_card


@pytest.fixture(scope="module")
def example_corpus(tmp_path_factory, examples_dir):
    from steth_hub.corpus import import_corpus, load_corpus

    out = tmp_path_factory.mktemp("corpus") / "kauh-examples"
    import_corpus("kauh", examples_dir / "kauh", out, n_folds=2, progress=False)
    return load_corpus(out)


def _front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def test_a_validation_split_is_not_counted_as_training_data(example_corpus, tmp_path):
    from steth_hub.experiment import train_experiment

    out = tmp_path / "m"
    model, _ = train_experiment({"name": "mfcc-split", "classifier": "mfcc-logreg"}, example_corpus, out,
                                progress=False, valid_fraction=0.4)
    training = json.loads((out / "steth.json").read_text())["training"]
    n_valid = training["validation_patients"]
    assert n_valid >= 1
    fitted = 5 - n_valid
    corpus = training["corpus"]
    assert corpus["data"]["n_patients"] == fitted and corpus["data"]["n_recordings"] == fitted
    assert sum(corpus["patients_by_label"].values()) == fitted
    assert sum(corpus["validation"]["patients_by_label"].values()) == n_valid
    text = render_card(out)
    assert f"{fitted} patients, {fitted} recordings." in text and "5 patients, 5 recordings." not in text


def test_a_quick_evaluation_is_not_put_into_the_model_index(example_corpus, tmp_path):
    """The embedded model's real evaluation report, flagged as a --quick smoke run: no model-index."""
    from pathlib import Path

    import steth_hub
    from steth_hub.experiment import train_experiment

    report = json.loads((Path(steth_hub.__file__).parent / "models" / "ast-asthma" / "steth.json").read_text())["evaluation"]
    out = tmp_path / "m"
    train_experiment({"name": "mfcc-quick", "classifier": "mfcc-logreg"}, example_corpus, out, progress=False)
    (tmp_path / "quick.json").write_text(json.dumps(dict(report, quick=True)))
    text = render_card(out, tmp_path / "quick.json")
    assert "model-index" not in _front_matter(text)
    # the same report without the quick flag is indexed (the check above can fail)
    (tmp_path / "full.json").write_text(json.dumps(dict(report, quick=False)))
    assert "model-index" in _front_matter(render_card(out, tmp_path / "full.json"))
