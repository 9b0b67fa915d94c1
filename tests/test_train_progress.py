"""Issue 13: `steth train` says what it is doing before the Trainer's bar and never prints raw log dicts."""

from __future__ import annotations

import numpy as np
import pytest

from steth_hub.clips import ClipSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips(examples_dir):
    from steth_hub.audio import decode

    waves, labels, recs = [], [], []
    for path in sorted((examples_dir / "kauh").glob("*.wav"))[:4]:
        rec = decode(path).resampled(16000)
        for k in range(2):
            waves.append(rec.samples[k * 16000:(k + 1) * 16000])
            labels.append(int("asthma" in path.name.lower()))
            recs.append(path.stem)
    return ClipSet(np.stack(waves), 16000, labels, recs, recs, np.zeros(len(waves)))


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [False, True])
def test_training_prints_progress_lines_and_no_raw_log_dicts(clips, tmp_path, capfd, quiet):
    from steth_builtin.ast_model import ASTClassifier

    recipe = {"warmup_steps": 0, "gradient_accumulation_steps": 1, "per_device_train_batch_size": 4,
              "logging_steps": 1, "max_steps": 2, "save_steps": 10, "disable_tqdm": quiet,
              "pretrain": {"epochs": 1}}
    history = ASTClassifier.from_config({"size": "tiny", "num_hidden_layers": 1}).fit(clips, None, recipe, tmp_path)
    out, err = capfd.readouterr()
    assert "{'loss'" not in out + err and "'train_runtime'" not in out + err
    assert any("loss" in entry for entry in history["log_history"])  # still recorded
    if quiet:
        assert "featurising" not in err
    else:
        assert "featurising 8 training clips" in err and "pretraining for 1 epoch" in err
