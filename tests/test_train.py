"""The shared Trainer loop: recipes, class weights, augmentation, reproducibility, resume and `steth train`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from steth_hub.clips import ClipSet
from steth_hub.errors import ConfigError
from steth_hub.train import augment_batch, check_recipe, class_weights, training_arguments

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread (conftest.py)

FAST = {"warmup_steps": 0, "gradient_accumulation_steps": 1, "per_device_train_batch_size": 4,
        "logging_steps": 1, "disable_tqdm": True, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def few_clips(example_wavs) -> ClipSet:
    """Real clips: two asthma and two not-asthma KAUH examples, 3 clips each, cut with numpy."""
    from steth_hub.audio import decode

    chosen = [p for p in example_wavs if p.parent.name == "kauh"][:4]
    waves, labels, recs, patients = [], [], [], []
    for path in chosen:
        rec = decode(path).resampled(16000)
        for k in range(3):
            waves.append(rec.samples[k * 16000:(k + 1) * 16000])
            labels.append(int("asthma" in path.name.lower()))
            recs.append(path.stem)
            patients.append(path.stem.split("_")[0])
    clips = ClipSet(np.stack(waves), 16000, labels, recs, patients, np.zeros(len(waves)))
    assert set(clips.labels) == {0, 1}
    return clips


def _tiny_ast():
    from steth_builtin.ast_model import ASTClassifier

    return ASTClassifier.from_config({"size": "tiny", "num_hidden_layers": 1})


# --------------------------------------------------------------------------- recipes
def test_unknown_recipe_keys_are_config_errors():
    with pytest.raises(ConfigError, match="learnig_rate.*did you mean 'learning_rate'"):
        check_recipe({"learnig_rate": 1e-4})
    with pytest.raises(ConfigError, match="output_dir"):
        check_recipe({"output_dir": "/tmp/x"})
    with pytest.raises(ConfigError, match="unknown augment"):
        check_recipe({"augment": {"pitch": 2}})
    with pytest.raises(ConfigError, match="class_weight"):
        check_recipe({"class_weight": "heavy"})


def test_the_paper_recipe_translates_to_training_arguments(tmp_path):
    from steth_hub.experiment import load_experiment

    recipe = check_recipe(load_experiment("configs/paper.yaml").recipe)
    args, notes = training_arguments(recipe, tmp_path, has_valid=True, cuda=False)
    assert (args.num_train_epochs, args.per_device_train_batch_size, args.learning_rate) == (25, 16, 8e-5)
    assert (args.weight_decay, args.logging_steps, args.eval_steps, args.save_steps) == (0.03, 1, 10, 50)
    assert (args.gradient_accumulation_steps, args.max_grad_norm) == (4, 1.0)
    assert args.lr_scheduler_type.value == "cosine" and args.warmup_steps == 150
    assert args.load_best_model_at_end and args.eval_strategy.value == "steps"
    assert args.fp16 is False and any("fp16" in n and "CUDA" in n for n in notes)
    assert any("warmup_ratio 0.25 not applied" in n for n in notes)
    args, _ = training_arguments(dict(recipe, fp16=False), tmp_path, has_valid=True, cuda=True)
    assert args.fp16 is False


def test_warmup_ratio_applies_without_warmup_steps(tmp_path):
    args, notes = training_arguments(check_recipe({"warmup_ratio": 0.25}), tmp_path, has_valid=False, cuda=False)
    assert args.warmup_steps == 0.25 and args.eval_strategy.value == "no"


def test_save_steps_must_be_a_multiple_of_eval_steps(tmp_path):
    with pytest.raises(ConfigError, match="multiple of eval_steps"):
        training_arguments(check_recipe({"eval_steps": 10, "save_steps": 25}), tmp_path, has_valid=True, cuda=False)


def test_balanced_class_weights():
    w = class_weights(np.array([0, 0, 0, 1]))
    assert w[1] == pytest.approx(3 * w[0]) and (w * np.array([3, 1])).sum() == pytest.approx(4)
    assert class_weights(np.array([0, 1]), "none").tolist() == [1.0, 1.0]


def test_augmentation_masks_mixes_and_keeps_shapes():
    import torch

    torch.manual_seed(0)
    x = torch.randn(6, 50, 128) + 5.0
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    out, targets = augment_batch(x, y, {"time": 1, "freq": 2}, {"time_mask": 10, "freq_mask": 8})
    assert out.shape == x.shape and (out == 0).any() and not (x == 0).any()
    assert torch.equal(targets, torch.nn.functional.one_hot(y, 2).float())
    _, mixed = augment_batch(x, y, {"time": 1, "freq": 2}, {"mixup_alpha": 0.4})
    assert torch.allclose(mixed.sum(1), torch.ones(6)) and ((mixed > 0) & (mixed < 1)).any()
    rolled, _ = augment_batch(x, y, {"time": 1, "freq": 2}, {"time_shift": 0.5})
    assert torch.allclose(rolled.sort(dim=1).values, x.sort(dim=1).values)  # a roll moves frames, loses none


def test_pad_shift_slides_the_clip_without_wrapping_it_around():
    """shift_mode pad: frames move by k and the gap is 0 (the normalised mean); nothing wraps to the other end."""
    import torch

    torch.manual_seed(1)
    n, length = 8, 40
    x = (torch.arange(1, length + 1, dtype=torch.float32)[None, :, None].expand(n, length, 3)).clone()
    y = torch.tensor([0, 1] * 4)
    out, _ = augment_batch(x, y, {"time": 1, "freq": 2}, {"time_shift": 0.5, "shift_mode": "pad"})
    moved = 0
    for row in out[:, :, 0]:
        kept = row[row != 0]
        assert torch.equal(kept, torch.arange(int(kept[0]), int(kept[-1]) + 1, dtype=torch.float32))  # in order
        assert kept[0] == 1 or kept[-1] == length  # one end of the clip stays: slid, not wrapped
        zeros = (row == 0).nonzero().flatten()
        assert len(zeros) <= length // 2
        if len(zeros):
            moved += 1
            assert zeros[0] == 0 or zeros[-1] == length - 1  # the gap is at one edge
    assert moved >= n // 2
    with pytest.raises(ConfigError, match="shift_mode"):
        check_recipe({"augment": {"time_shift": 0.2, "shift_mode": "wrap"}})


def test_label_smoothing_is_applied_by_our_loss(few_clips, tmp_path):
    """label_smoothing_factor reaches the class-weighted loss (Trainer's own would need a model config)."""
    recipe = dict(FAST, max_steps=2, seed=3)
    plain = _tiny_ast().fit(few_clips, None, recipe, tmp_path / "plain")
    smooth = _tiny_ast().fit(few_clips, None, dict(recipe, label_smoothing_factor=0.2), tmp_path / "smooth")
    first = [next(e["loss"] for e in h["log_history"] if "loss" in e) for h in (plain, smooth)]
    assert first[0] != pytest.approx(first[1], abs=1e-4)
    args, _ = training_arguments(check_recipe(dict(recipe, label_smoothing_factor=0.2)), tmp_path, has_valid=False,
                                 cuda=False)
    assert args.label_smoothing_factor == 0.0


def test_statistics_targets_are_each_clips_own_spectrum_summary():
    import torch

    from steth_hub.train import statistics_targets

    torch.manual_seed(0)
    x = torch.randn(10, 30, 6)
    x[:, :, 5] = 2.0  # a constant (empty) band gives no target
    t = statistics_targets(x, {"time": 1, "freq": 2})
    assert t.shape == (10, 10)
    assert torch.allclose(t.mean(0), torch.zeros(10), atol=1e-5) and torch.allclose(t.std(0), torch.ones(10), atol=1e-4)
    expected = x[:, :, 0].mean(1)
    assert torch.allclose(t[:, 0], (expected - expected.mean()) / expected.std(), atol=1e-5)
    with pytest.raises(ConfigError, match="pretrain"):
        check_recipe({"pretrain": {"epoch": 3}})


@pytest.mark.slow
def test_pretraining_learns_the_statistics_and_a_frozen_encoder_trains_the_head_only(few_clips, tmp_path):
    """pretrain: the regression loss falls on real clips; freeze_encoder: only the classification head moves."""
    import torch
    from transformers import TrainerCallback

    before = {}

    class Snapshot(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            before.update({k: v.detach().clone() for k, v in model.net.state_dict().items()})

    model = _tiny_ast()
    recipe = dict(FAST, max_steps=4, seed=5, pretrain={"epochs": 40, "learning_rate": 3e-3}, freeze_encoder=True)
    history = model.fit(few_clips, None, recipe, tmp_path / "run", callbacks=[Snapshot()])
    losses = history["pretrain"]["loss"]
    assert history["pretrain"]["epochs"] == 40 and np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    assert history["pretrain"]["seconds"] > 0 and history["pretrain"]["clips_per_second"] > 0  # what bench_train reports
    after = model.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # position embeddings take the folded input centring when training ends (fold_normalisation)
    assert changed - {"audio_spectrogram_transformer.embeddings.position_embeddings"} == {
        k for k in before if k.startswith("classifier.")}
    assert all(p.requires_grad for p in model.net.parameters())  # nothing stays frozen afterwards


def test_one_class_training_set_is_refused(few_clips):
    one = few_clips.subset(few_clips.labels == 1)
    with pytest.raises(ConfigError, match="one class"):
        _tiny_ast().fit(one, None, FAST)


# --------------------------------------------------------------------------- reproducibility and resume
def _weights(model):
    return {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}


@pytest.mark.slow
def test_seeded_training_is_reproducible_and_a_stopped_run_resumes(few_clips, tmp_path):
    """Stop after 3 of 6 steps, resume from the checkpoint, finish: the same weights as one run."""
    import torch
    from transformers import TrainerCallback

    recipe = dict(FAST, max_steps=6, save_steps=3, seed=7, augment={"time_mask": 8, "mixup_alpha": 0.3})
    whole = _tiny_ast()
    whole.fit(few_clips, None, recipe, tmp_path / "whole")

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                control.should_training_stop = True

    first = _tiny_ast()
    history = first.fit(few_clips, None, recipe, tmp_path / "stopped", callbacks=[StopAt()])
    assert history["global_step"] == 3 and (tmp_path / "stopped" / "checkpoint-3").is_dir()

    resumed = _tiny_ast()
    history = resumed.fit(few_clips, None, dict(recipe, resume=True), tmp_path / "stopped")
    assert history["resumed_from"].endswith("checkpoint-3") and history["global_step"] == 6
    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k

    again = _tiny_ast()
    again.fit(few_clips, None, recipe, tmp_path / "again")
    for k, v in _weights(again).items():
        assert torch.equal(v, a[k]), k


def test_resume_without_a_checkpoint_is_an_error(few_clips, tmp_path):
    with pytest.raises(ConfigError, match="nothing to resume"):
        _tiny_ast().fit(few_clips, None, dict(FAST, max_steps=1, resume=True), tmp_path / "empty")


@pytest.mark.slow
def test_validation_set_drives_early_stopping_and_the_threshold(few_clips, tmp_path):
    train = few_clips.subset(np.isin(np.arange(len(few_clips)), [0, 1, 3, 4, 6, 7, 9, 10]))
    valid = few_clips.subset(np.isin(np.arange(len(few_clips)), [2, 5, 8, 11]))
    model = _tiny_ast()
    history = model.fit(train, valid, dict(FAST, num_train_epochs=200, eval_steps=1, save_steps=1, save_total_limit=1,
                                           early_stopping_patience=2, learning_rate=1e-4), tmp_path / "run")
    assert history["stopped_early"] and history["global_step"] < history["max_steps"]
    assert history["best_checkpoint"] and history["threshold_from"] == "validation recordings"
    assert any("eval_loss" in e for e in history["log_history"])


# --------------------------------------------------------------------------- steth train
@pytest.fixture(scope="module")
def example_corpus(examples_dir, tmp_path_factory):
    """The shipped KAUH examples imported as a corpus with the real importer."""
    from steth_hub.corpus import import_corpus

    out = tmp_path_factory.mktemp("corpus") / "kauh"
    import_corpus("kauh", examples_dir / "kauh", out, n_folds=2)
    return out


@pytest.mark.slow
def test_steth_train_writes_a_model_folder_and_resumes(example_corpus, tmp_path):
    from steth_hub.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text("classifier: ast\nmodel: {size: tiny, num_hidden_layers: 1}\npreset: excerpt-10s\n"
                      "recipe: {max_steps: 2, save_steps: 1, warmup_steps: 0, per_device_train_batch_size: 4,"
                      " gradient_accumulation_steps: 1, logging_steps: 1}\n")
    out = tmp_path / "model"
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--corpus", str(example_corpus),
                                       "--out", str(out), "--quiet", "--name", "test/tiny"])
    assert result.exit_code == 0, result.output
    assert "trained ast" in result.output and (out / "model.safetensors").is_file()
    meta = json.loads((out / "steth.json").read_text())
    assert meta["plugin"] == "ast" and meta["name"] == "test/tiny" and meta["preset"]["name"] == "excerpt-10s"
    training = meta["training"]
    assert training["corpus"]["recordings_by_label"]["asthma"] == 2
    assert training["recipe"]["max_steps"] == 2 and training["validation_fraction"] == 0.0
    assert (tmp_path / "model.checkpoints" / "checkpoint-2").is_dir()

    # a longer run of the same config resumes from checkpoint-2
    config.write_text(config.read_text().replace("max_steps: 2", "max_steps: 3"))
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--corpus", str(example_corpus),
                                       "--out", str(out), "--quiet", "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "3 steps" in result.output


def test_steth_train_bad_config_is_a_clear_error(example_corpus, tmp_path):
    from steth_hub.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("classifier: ast\nrecipe: {num_epochs: 3}\n")
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--corpus", str(example_corpus),
                                       "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "num_epochs" in result.output and "num_train_epochs" in result.output
    assert not (tmp_path / "m").exists()


def test_epochs_and_threshold_come_from_an_evaluation_report(tmp_path):
    from steth_hub.experiment import epochs_from_evaluation, read_evaluation

    report = {"recommended_threshold": 0.42,
              "model": {"per_fold": [{"best_epoch": 3.2}, {"best_epoch": 5.0}, {"best_epoch": 4.1}]}}
    assert epochs_from_evaluation(report) == 4.1
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(report))
    assert read_evaluation(path)["recommended_threshold"] == 0.42
    path.write_text("{}")
    with pytest.raises(ConfigError, match="evaluation report"):
        read_evaluation(path)


def _report(name: str, seed: int, threshold: float, best_epochs) -> dict:
    """The parts of a `steth evaluate` report that a final model takes from it."""
    return {"name": name, "experiment": {"name": name}, "protocol": {"seed": seed},
            "recommended_threshold": threshold, "model": {"per_fold": [{"best_epoch": e} for e in best_epochs]}}


def test_several_fold_seeds_give_the_median_threshold_and_the_median_best_epoch_over_all_folds():
    from steth_hub.experiment import combine_evaluations

    reports = [_report("r", 3, 0.30, [1.0, 2.0, 9.0]), _report("r", 4, 0.50, [0.5, 1.5]),
               _report("r", 5, 0.45, [4.0])]
    combined = combine_evaluations(reports, experiment="r")
    assert combined["threshold"] == pytest.approx(0.45)  # not the first seed's 0.30, nor the mean 0.4167
    assert combined["epochs"] == 1.8                      # median of the six folds, one decimal
    assert [f["seed"] for f in combined["fold_seeds"]] == [3, 4, 5]
    assert "fold seeds 3, 4, 5" in combined["threshold_from"]
    one = combine_evaluations(reports[:1], experiment="r")  # one report: exactly what it says
    assert one["threshold"] == 0.30 and one["epochs"] == 2.0
    with pytest.raises(ConfigError, match="fold seed 3 is given twice"):
        combine_evaluations([reports[0], dict(reports[0])], experiment="r", sources=["a.json", "b.json"])
    with pytest.raises(ConfigError, match="experiment 'r', not 'other'"):
        combine_evaluations(reports, experiment="other")
    no_seed = {k: v for k, v in reports[1].items() if k != "protocol"}
    with pytest.raises(ConfigError, match="does not say its fold seed"):
        combine_evaluations([reports[0], no_seed], experiment="r", sources=["a.json", "b.json"])
    with pytest.raises(ConfigError, match="not a usable evaluation report"):
        combine_evaluations([{k: v for k, v in reports[0].items() if k != "recommended_threshold"}])


def test_steth_train_takes_several_fold_seeds_reports(example_corpus, tmp_path):
    from steth_hub.cli import main

    config = tmp_path / "mfcc-logreg.yaml"
    config.write_text("name: mfcc-logreg\nclassifier: mfcc-logreg\npreset: excerpt-10s\nrecipe: {}\n")
    paths = []
    for seed, threshold in ((3, 0.62), (4, 0.31), (5, 0.47)):
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps(_report("mfcc-logreg", seed, threshold, [])))
        paths += ["--evaluation", str(path)]
    out = tmp_path / "model"
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--corpus", str(example_corpus),
                                       "--out", str(out), "--quiet", *paths])
    assert result.exit_code == 0, result.output
    assert "threshold 0.470" in result.output and "median over fold seeds 3, 4, 5" in result.output
    meta = json.loads((out / "steth.json").read_text())
    assert meta["threshold"] == pytest.approx(0.47)
    assert [f["threshold"] for f in meta["training"]["fold_seeds"]] == [0.62, 0.31, 0.47]
    assert meta["evaluation"]["protocol"]["seed"] == 3  # the first report is the one the card quotes

    # a report of another recipe is refused before any training, naming the file
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_report("efficientat-asthma", 0, 0.5, [])))
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--corpus", str(example_corpus),
                                       "--out", str(tmp_path / "m2"), "--quiet", "--evaluation", str(other)])
    assert result.exit_code == 2 and "other.json" in result.output and "'efficientat-asthma'" in result.output
    assert not (tmp_path / "m2").exists()


def test_a_final_model_stops_at_the_folds_median_best_epoch_on_the_recipes_schedule(few_clips, tmp_path):
    from steth_hub.experiment import train_on_clips

    experiment = {"name": "tiny", "classifier": "ast", "model": {"size": "tiny", "num_hidden_layers": 1},
                  "preset": "excerpt-10s",
                  "recipe": dict(FAST, num_train_epochs=4, lr_scheduler_type="linear", save_steps=100)}
    reports = [_report("tiny", 1, 0.4, [1.0, 3.0]), _report("tiny", 2, 0.6, [1.0])]
    model, history = train_on_clips(experiment, few_clips, tmp_path / "model", evaluation=reports,
                                    valid_fraction=0.0, progress=False)
    assert history["epochs"] == pytest.approx(1.0)  # 3 steps of 12 clips in batches of 4, then stopped
    lrs = [e["learning_rate"] for e in history["log_history"] if "learning_rate" in e]
    # the learning rate follows the 4-epoch schedule (3/4 of the peak left after epoch 1), not a 1-epoch one
    assert lrs[-1] > 0.5 * FAST["learning_rate"]
    assert model.threshold == pytest.approx(0.5)
    assert model.metadata["training"]["recipe"]["stop_at_epoch"] == 1.0
    assert any("stops at epoch 1 of the recipe's schedule" in note for note in history["notes"])
