"""Issue 13, data loss: no command replaces a folder it should not, resume survives a killed
checkpoint write, half-written outputs of a killed run are cleaned up; bad training values are
refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from steth_hub.errors import ConfigError, CorpusError
from steth_hub.fileio import atomic_directory, check_output_folder, stale_partials

MFCC_CONFIG = "classifier: mfcc-logreg\nmodel: {n_mfcc: 13}\npreset: excerpt-10s\nrecipe: {}\n"


@pytest.fixture(scope="module")
def example_corpus(examples_dir, tmp_path_factory):
    from steth_hub.corpus import import_corpus

    out = tmp_path_factory.mktemp("corpus") / "kauh"
    import_corpus("kauh", examples_dir / "kauh", out, n_folds=2)
    return out


def _someone_elses_folder(path):
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    return path


# --------------------------------------------------------------------------- the one helper
def test_an_output_that_is_or_contains_an_input_is_refused(tmp_path):
    corpus = tmp_path / "data" / "corpus"
    corpus.mkdir(parents=True)
    for out in (corpus, tmp_path / "data", tmp_path):
        with pytest.raises(ConfigError, match="is, or contains, the input"):
            check_output_folder(out, [corpus], overwrite=True)  # --overwrite never allows it


def test_a_non_empty_foreign_folder_needs_overwrite(tmp_path):
    other = _someone_elses_folder(tmp_path / "other")
    with pytest.raises(ConfigError, match="not empty.*--overwrite"):
        check_output_folder(other, markers=("steth.json",), what="model")
    assert check_output_folder(other, markers=("steth.json",), overwrite=True) == other.resolve()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "steth.json").write_text("{}")
    check_output_folder(tmp_path / "model", markers=("steth.json",))  # an earlier model: replaced
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output_folder(tmp_path / "file", overwrite=True)


def test_corpus_import_uses_the_same_rule(examples_dir, tmp_path):
    from steth_hub.corpus import import_corpus

    with pytest.raises(CorpusError, match="is, or contains, the input"):
        import_corpus("kauh", examples_dir / "kauh", examples_dir)


# --------------------------------------------------------------------------- commands
def test_steth_train_refuses_a_foreign_folder_and_the_corpus_parent_before_any_work(example_corpus, tmp_path):
    from steth_hub.cli import main

    config = tmp_path / "mfcc.yaml"
    config.write_text(MFCC_CONFIG)
    other = _someone_elses_folder(tmp_path / "other")
    args = ["train", "--config", str(config), "--corpus", str(example_corpus), "--quiet"]
    result = CliRunner().invoke(main, args + ["--out", str(other)])
    assert result.exit_code == 2 and "--overwrite" in result.output, result.output
    assert (other / "thesis.tex").read_text() == "years of work"
    result = CliRunner().invoke(main, args + ["--out", str(example_corpus.parent), "--overwrite"])
    assert result.exit_code == 2 and "contains, the input" in result.output, result.output
    assert (example_corpus / "corpus.json").is_file()


def test_steth_train_mfcc_prints_its_summary_and_replaces_only_a_model(example_corpus, tmp_path):
    """`steth train --config configs/mfcc-logreg.yaml` used to crash after saving (KeyError: 'global_step')."""
    from steth_hub.cli import main

    config = tmp_path / "mfcc.yaml"
    config.write_text(MFCC_CONFIG)
    out = tmp_path / "model"
    args = ["train", "--config", str(config), "--corpus", str(example_corpus), "--quiet", "--out", str(out)]
    for _ in range(2):  # the second run replaces the first model (a steth-hub model folder)
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "trained mfcc-logreg on" in result.output and "threshold" in result.output
    assert (out / "steth.json").is_file()
    other = _someone_elses_folder(tmp_path / "other")
    result = CliRunner().invoke(main, args[:-1] + [str(other), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (other / "thesis.tex").exists() and (other / "steth.json").is_file()


def test_steth_preprocess_out_refuses_a_foreign_folder_and_the_corpus(example_corpus, tmp_path):
    from steth_hub.cli import main

    other = _someone_elses_folder(tmp_path / "other")
    result = CliRunner().invoke(main, ["preprocess", str(example_corpus), "--out", str(other), "--quiet"])
    assert result.exit_code == 2 and "--overwrite" in result.output, result.output
    assert (other / "thesis.tex").is_file()
    result = CliRunner().invoke(main, ["preprocess", str(example_corpus), "--out", str(example_corpus), "--quiet",
                                       "--overwrite"])
    assert result.exit_code == 2 and "contains, the input" in result.output
    assert (example_corpus / "corpus.json").is_file()


def test_steth_evaluate_refuses_a_foreign_folder_and_the_corpus_parent(example_corpus, tmp_path):
    from steth_hub.cli import main

    config = tmp_path / "mfcc.yaml"
    config.write_text(MFCC_CONFIG)
    other = _someone_elses_folder(tmp_path / "other")
    args = ["evaluate", "--config", str(config), "--corpus", str(example_corpus), "--quick"]
    result = CliRunner().invoke(main, args + ["--out", str(other)])
    assert result.exit_code == 2 and "--overwrite" in result.output, result.output
    result = CliRunner().invoke(main, args + ["--out", str(example_corpus.parent), "--overwrite"])
    assert result.exit_code == 2 and "contains, the input" in result.output, result.output


# --------------------------------------------------------------------------- killed runs
def test_a_killed_atomic_write_leaves_a_partial_that_the_next_run_removes(tmp_path, capsys):
    target = tmp_path / "model"
    code = textwrap.dedent(f"""
        import os, signal
        from steth_hub.fileio import atomic_directory
        with atomic_directory({str(target)!r}) as tmp:
            (tmp / "half.bin").write_bytes(b"x" * 10)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", code], check=False)
    leftovers = list(tmp_path.glob(".model.*.partial"))
    assert len(leftovers) == 1 and not target.exists()
    assert stale_partials(target)[0] == leftovers
    with atomic_directory(target) as tmp:
        (tmp / "ok").write_text("done")
    assert not list(tmp_path.glob(".model.*.partial")) and (target / "ok").is_file()
    assert not (target / ".steth-partial-owner").exists()
    assert "removed" in capsys.readouterr().err


def test_a_partial_of_a_live_writer_is_left_alone(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        assert stale_partials(target) == ([], [])  # this process is alive: not stale
        (tmp / "x").write_text("1")


def _checkpoint(folder, step, *, state=True, empty=None):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "optimizer.pt").write_bytes(b"opt")
    if state:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if empty:
        (path / empty).write_bytes(b"")
    return path


def test_resume_picks_the_newest_complete_checkpoint_and_says_which_were_skipped(tmp_path, capsys):
    from steth_hub.train import _has_checkpoint

    good = _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 20, state=False)            # killed before trainer_state.json
    _checkpoint(tmp_path, 30, empty="model.safetensors")  # killed while writing the weights
    assert _has_checkpoint(tmp_path) == str(good)
    err = capsys.readouterr().err
    assert "checkpoint-20 (no trainer_state.json" in err and "checkpoint-30 (0-byte file(s) model.safetensors" in err
    assert "checkpoint-10" not in err


@pytest.mark.slow
def test_a_real_run_resumes_past_a_checkpoint_broken_by_a_kill(tmp_path, examples_dir):
    """Train 4 steps with a checkpoint every step; break the last checkpoint; --resume uses checkpoint-3."""
    import numpy as np

    from steth_hub.audio import decode
    from steth_hub.clips import ClipSet

    waves, labels, recs = [], [], []
    for path in sorted((examples_dir / "kauh").glob("*.wav"))[:4]:
        rec = decode(path).resampled(16000)
        for k in range(2):
            waves.append(rec.samples[k * 16000:(k + 1) * 16000])
            labels.append(int("asthma" in path.name.lower()))
            recs.append(path.stem)
    clips = ClipSet(np.stack(waves), 16000, labels, recs, recs, np.zeros(len(waves)))
    from steth_builtin.ast_model import ASTClassifier

    recipe = {"warmup_steps": 0, "gradient_accumulation_steps": 1, "per_device_train_batch_size": 4,
              "logging_steps": 1, "disable_tqdm": True, "max_steps": 4, "save_steps": 1, "save_total_limit": 5}
    ASTClassifier.from_config({"size": "tiny", "num_hidden_layers": 1}).fit(clips, None, recipe, tmp_path)
    (tmp_path / "checkpoint-4" / "trainer_state.json").unlink()
    history = ASTClassifier.from_config({"size": "tiny", "num_hidden_layers": 1}).fit(
        clips, None, dict(recipe, resume=True), tmp_path)
    assert history["resumed_from"].endswith("checkpoint-3") and history["global_step"] == 4


# --------------------------------------------------------------------------- training values
@pytest.mark.parametrize("recipe, key", [({"learning_rate": "fast"}, "learning_rate"),
                                         ({"num_train_epochs": "ten"}, "num_train_epochs"),
                                         ({"per_device_train_batch_size": -8}, "per_device_train_batch_size"),
                                         ({"per_device_train_batch_size": 2.5}, "per_device_train_batch_size"),
                                         ({"learning_rate": float("nan")}, "learning_rate"),
                                         ({"warmup_ratio": 3}, "warmup_ratio"),
                                         ({"seed": True}, "seed"),
                                         ({"pretrain": {"epochs": "many"}}, "pretrain.epochs"),
                                         ({"augment": {"time_mask": -1}}, "augment.time_mask")])
def test_wrong_typed_training_values_are_refused(recipe, key):
    from steth_hub.train import check_recipe

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_recipe(recipe, source="x.yaml")


def test_numbers_written_as_strings_are_accepted():
    from steth_hub.train import check_recipe

    assert check_recipe({"learning_rate": "1e-4"})["learning_rate"] == pytest.approx(1e-4)


def test_steth_train_refuses_a_bad_value_before_reading_the_corpus(tmp_path):
    from steth_hub.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("classifier: ast\nrecipe: {learning_rate: fast}\n")
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--corpus", str(tmp_path / "nowhere"),
                                       "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "learning_rate: 'fast'" in result.output, result.output


def test_steth_evaluate_refuses_a_bad_value_before_any_training(example_corpus, tmp_path):
    from steth_hub.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("classifier: ast\nrecipe: {num_train_epochs: ten}\n")
    result = CliRunner().invoke(main, ["evaluate", "--config", str(config), "--corpus", str(example_corpus),
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "num_train_epochs: 'ten'" in result.output, result.output
    assert not (tmp_path / "run").exists()
