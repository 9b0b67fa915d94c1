"""Knowledge distillation in the Trainer loop: a teacher trained on the student's clips only, soft targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steth_hub.clips import ClipSet
from steth_hub.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(example_clipset) -> ClipSet:
    return example_clipset


TEACHER = {"name": "teacher", "classifier": "mfcc-logreg", "model": {}, "preset": "excerpt-10s", "recipe": {}}


def test_augmented_copies_keep_shape_and_are_quiet():
    from steth_hub.train import augmented_copies

    x = np.random.default_rng(0).standard_normal((3, 8000)).astype(np.float32)
    out = augmented_copies(x, 2, noise_snr_db=(40.0, 40.0), gain_db=0.0, seed=1)
    assert out.shape == (6, 8000) and out.dtype == np.float32
    residual = out[:3] - x
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean(residual ** 2))
    assert 38 < snr < 42
    assert not np.array_equal(out[:3], out[3:])  # two different copies


def test_distillation_set_trains_the_teacher_on_the_given_clips_only(clips, tmp_path):
    from steth_hub.train import distillation_set

    train = clips.for_patients(sorted(set(clips.patient_ids))[:-1])
    augmented, soft, summary = distillation_set({"teacher": TEACHER, "copies": 2}, train, seed=3, out_dir=tmp_path)
    assert len(augmented) == len(soft) == 3 * len(train) and summary["copies"] == 2
    assert set(augmented.patient_ids) == set(train.patient_ids)  # no held-out patient, no new ids
    assert np.all((soft > 0) & (soft < 1))
    # the teacher learnt these clips: higher P(asthma) on the asthma ones
    assert soft[augmented.labels == 1].mean() > soft[augmented.labels == 0].mean()


def test_a_student_learns_from_soft_targets(clips, tmp_path):
    from steth_hub.registry import get_registry

    student = get_registry().get("classifier", "ast").load().from_config(
        {"size": "tiny", "front_end": {"sampling_rate": 4000, "num_mel_bins": 64}, "frequency_stride": 8,
         "time_stride": 8})
    recipe = {"num_train_epochs": 2, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
              "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 100, "seed": 0, "disable_tqdm": True,
              "distill": {"teacher": TEACHER, "alpha": 0.3, "copies": 1}}
    history = student.fit(clips, recipe=recipe, out_dir=tmp_path)
    assert history["distillation"]["teacher_classifier"] == "mfcc-logreg"
    assert history["n_train_clips"] == 2 * len(clips)
    assert student.metadata["training"]["distillation"]["alpha"] == 0.3
    assert np.isfinite(student.predict_proba(clips.waveforms)).all()


def test_bad_distill_settings_are_refused_before_training():
    from steth_hub.train import check_recipe

    for bad in ({"teacher": 3}, {"teacher": "x.yaml", "alpha": 2}, {"teacher": "x.yaml", "temperature": 2}):
        with pytest.raises(ConfigError, match="bad 'distill' setting"):
            check_recipe({"distill": bad})


# --------------------------------------------------------------------------- noisy copies (recipe key noisy_copies)
def test_noisy_copies_keep_patients_and_stay_inside_the_band(clips):
    from steth_hub.train import with_noisy_copies

    expanded, summary = with_noisy_copies(clips, {"copies": 1, "noise_snr_db": [20, 20], "max_hz": 2000}, seed=5)
    n = len(clips)
    assert len(expanded) == 2 * n and summary["n_clips"] == 2 * n
    for field in ("labels", "patient_ids", "recording_ids"):
        assert np.array_equal(getattr(expanded, field)[n:], getattr(clips, field))
    assert np.array_equal(expanded.waveforms[:n], clips.waveforms)  # the originals are untouched
    noise = expanded.waveforms[n:].astype(np.float64) - clips.waveforms
    snr = 10 * np.log10(np.mean(clips.waveforms.astype(np.float64) ** 2, axis=1) / np.mean(noise ** 2, axis=1))
    assert np.all(np.abs(snr - 20) < 0.5)
    spectrum = np.abs(np.fft.rfft(noise, axis=1)) ** 2
    freqs = np.fft.rfftfreq(noise.shape[1], 1.0 / clips.sample_rate)
    above = spectrum[:, freqs > 2500].sum() / spectrum.sum()
    assert above < 1e-3  # low-passed to the preset's band: nothing a band-limited recording lacks
    again, _ = with_noisy_copies(expanded, {"copies": 3})
    assert again is expanded  # already expanded: not copied twice (the probe and the fine-tune share it)


@pytest.mark.parametrize("bad", [{"copies": 0}, {"copies": 1, "noise_snr_db": [40, 10]},
                                 {"copies": 1, "noise_snr_db": "loud"}, {"copies": 1, "colour": "pink"}, [1]])
def test_bad_noisy_copies_settings_are_refused_before_training(bad):
    from steth_hub.train import check_recipe

    with pytest.raises(ConfigError, match="noisy_copies"):
        check_recipe({"noisy_copies": bad})


# --------------------------------------------------------------------------- consistency (noisy_copies.consistency)
def test_consistency_loss_is_zero_for_equal_outputs_and_symmetric():
    import torch

    from steth_hub.train import consistency_loss

    a = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    b = torch.tensor([[0.5, 0.0], [1.0, -1.0]])
    assert float(consistency_loss(a, a)) == pytest.approx(0.0, abs=1e-7)
    assert float(consistency_loss(a, b)) > 0.05
    assert float(consistency_loss(a, b)) == pytest.approx(float(consistency_loss(b, a)), rel=1e-6)


def test_consistency_pairs_each_clip_with_its_own_copies(clips):
    import torch

    from steth_hub.train import consistency_pairs, with_noisy_copies

    expanded, _ = with_noisy_copies(clips, {"copies": 2, "noise_snr_db": [30, 30], "consistency": 1.0}, seed=1)
    feats = torch.as_tensor(expanded.waveforms)  # stand-ins for features: row i is clip i's waveform
    clean, noisy, labels = consistency_pairs(expanded, feats)
    n = len(clips)
    assert len(clean) == len(noisy) == len(labels) == 2 * n
    for k in range(2 * n):
        assert np.array_equal(clean[k].numpy(), clips.waveforms[k % n])
        residual = noisy[k].numpy().astype(np.float64) - clips.waveforms[k % n]
        assert 10 * np.log10(np.mean(clips.waveforms[k % n] ** 2) / np.mean(residual ** 2)) == pytest.approx(30, abs=0.5)
    assert np.array_equal(labels, np.tile(clips.labels, 2))
    with pytest.raises(ConfigError, match="consistency needs the training clips with their noisy copies"):
        consistency_pairs(clips, torch.as_tensor(clips.waveforms))


def test_consistency_training_keeps_a_clip_and_its_noisy_copy_together(clips, tmp_path, monkeypatch):
    import steth_hub.train as train_module
    from steth_hub.registry import get_registry

    seen = []
    original = train_module.consistency_loss
    monkeypatch.setattr(train_module, "consistency_loss",
                        lambda a, b: seen.append((a.shape, b.shape)) or original(a, b))
    gaps = {}
    for weight in (0.0, 20.0):
        model = get_registry().get("classifier", "ast").load().from_config(
            {"size": "tiny", "front_end": {"sampling_rate": 4000, "num_mel_bins": 64}, "frequency_stride": 8,
             "time_stride": 8})
        recipe = {"num_train_epochs": 4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                  "learning_rate": 2e-3, "logging_steps": 1, "save_steps": 1000, "seed": 0, "disable_tqdm": True,
                  "noisy_copies": {"copies": 1, "noise_snr_db": [0, 5], "consistency": weight}}
        history = model.fit(clips, recipe=recipe, out_dir=tmp_path / str(weight))
        assert history["n_train_clips"] == 2 * len(clips)
        noisy = train_module.with_noisy_copies(clips, recipe["noisy_copies"], seed=0)[0].waveforms[len(clips):]
        gaps[weight] = float(np.mean(np.abs(model.predict_proba(clips.waveforms) - model.predict_proba(noisy))))
    assert seen and all(a == b and a[0] >= 1 for a, b in seen)  # clean and noisy logits, batch by batch
    steps = -(-len(clips) // 8) * 4
    assert len(seen) == steps  # one pair per clip: the epoch holds the clips, each beside its copy
    assert gaps[20.0] < 0.5 * gaps[0.0], gaps


def test_consistency_with_distill_is_refused_before_any_work():
    from steth_hub.train import check_recipe

    with pytest.raises(ConfigError, match="consistency cannot be combined with distill"):
        check_recipe({"noisy_copies": {"copies": 1, "consistency": 1.0}, "distill": {"teacher": "x.yaml"}})


@pytest.mark.parametrize("shape,axes", [((6, 1, 16, 40), {"time": 3, "freq": 2}), ((6, 40, 16), {"time": 1, "freq": 2})])
@pytest.mark.parametrize("shift_mode", ["roll", "pad"])
def test_a_clip_and_its_copy_get_the_same_masks_shift_gain_and_mixup(shape, axes, shift_mode):
    import torch

    from steth_hub.train import augment_batch

    torch.manual_seed(0)
    x = torch.randn(shape)
    pair = torch.stack([x, x.clone()], dim=1)  # as compute_loss stacks a clip and its copy
    shifted = {k: v % x.dim() + 1 for k, v in axes.items()}
    settings = {"time_mask": 10, "freq_mask": 4, "time_shift": 0.3, "shift_mode": shift_mode, "gain_db": 0.5,
                "mixup_alpha": 0.4}
    out, targets = augment_batch(pair, torch.tensor([0, 1, 0, 1, 0, 1]), shifted, settings)
    assert torch.equal(out[:, 0], out[:, 1])  # identical inputs stay identical: the noise is the only difference
    assert not torch.equal(out[:, 0], x)  # and they were augmented
    assert targets.shape == (6, 2)
