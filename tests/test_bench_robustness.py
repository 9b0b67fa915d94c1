"""bench/bench_robustness.py: the perturbations are what they say, and a run writes a complete table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import steth_hub

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import bench_robustness as bench  # noqa: E402


@pytest.fixture(scope="module")
def real(example_wavs):
    from steth_hub.audio import decode

    return decode(example_wavs[0])


@pytest.mark.parametrize("snr", [60.0, 40.0, 30.0])
def test_noise_has_the_stated_snr_and_is_seeded(real, snr):
    x = real.samples.astype(np.float64)
    noisy = bench.perturb(real.samples, real.sample_rate, "noise", snr, np.random.default_rng([0, 1, 2]))
    measured = 10 * np.log10(np.mean(x ** 2) / np.mean((noisy - x) ** 2))
    assert measured == pytest.approx(snr, abs=0.3)
    again = bench.perturb(real.samples, real.sample_rate, "noise", snr, np.random.default_rng([0, 1, 2]))
    assert np.array_equal(noisy, again)


def test_8_bit_gain_and_resampling(real):
    q = bench.perturb(real.samples, real.sample_rate, "bits", 8, None)
    err = np.abs(q - real.samples)
    assert np.allclose(q * 128, np.round(q * 128)) and err.max() <= 1 / 128 + 1e-6  # full scale clips to 127/128
    assert np.mean(err <= 1 / 256 + 1e-6) > 0.95
    louder = bench.perturb(real.samples, real.sample_rate, "gain", 6.0, None)
    assert np.abs(louder).max() <= 1.0
    quieter = bench.perturb(real.samples, real.sample_rate, "gain", -6.0, None)
    assert np.allclose(quieter, real.samples * 10 ** (-6 / 20), atol=1e-6)
    back = bench.perturb(real.samples, real.sample_rate, "resample", 8000, None)
    assert back.shape == real.samples.shape


def test_a_run_on_the_examples_writes_every_condition(tmp_path, examples_dir, capsys, one_torch_thread):
    out = tmp_path / "r.json"
    assert bench.main(["steth/ast-asthma", "--data", str(examples_dir), "--limit", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["condition"] for r in result["results"]] == [c[0] for c in bench.CONDITIONS]
    for row in result["results"]:
        assert row["n"] + row["rejected"] == 3 - result["clean_rejected"]
        assert row["flip_rate"] is None or 0.0 <= row["flip_rate"] <= 1.0
    assert "| noise 60 dB SNR |" in capsys.readouterr().out
    rows = {r["condition"]: r for r in result["results"]}
    eight = rows["8-bit requantisation"]
    assert eight["warned"] == eight["n"] > 0 and eight["silent_flips"] == 0  # steth screen flags every one
    assert all(rows[c]["warned"] == 0 for c in ("noise 60 dB SNR", "noise 40 dB SNR", "gain -6 dB"))
    assert all(r["silent_flips"] <= r["flips"] for r in result["results"])
    shipped = json.loads((Path(steth_hub.__file__).parent / "models" / "ast-asthma" / "steth.json").read_text())
    assert result["trained"]["epochs"] == shipped["training"]["epochs"]  # the report says which model it measured


def test_a_given_threshold_replaces_the_models(tmp_path, examples_dir, one_torch_thread):
    out = tmp_path / "r.json"
    assert bench.main(["steth/ast-asthma", "--data", str(examples_dir), "--limit", "2", "--threshold", "0",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["threshold"] == 0.0 and result["threshold_from"] == "--threshold"
    for row in result["results"]:  # at 0 every recording is positive, clean or changed (at the model's own: not)
        assert row["positives"] == row["n"] > 0 and row["flips"] == 0


def test_flips_that_screening_flags_as_unstable_are_not_silent(tmp_path, examples_dir, one_torch_thread):
    out = tmp_path / "r.json"
    assert bench.main(["steth/ast-asthma", "--data", str(examples_dir), "--limit", "3", "--stability", "on",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["stability_checks"] == [["noise", 60.0], ["noise", 40.0]]
    for row in result["results"]:
        assert row["unstable_flips"] <= min(row["flips"], row["unstable"])
        assert row["silent_flips"] <= row["flips"] - row["unstable_flips"]
        assert row["clean_unstable_flips"] <= row["flips"]
    assert 0 <= result["clean_unstable"] <= 3 - result["clean_rejected"]
    assert bench.perturb is steth_hub.stability.perturb  # the bench's changes are screening's


def test_a_flip_screening_flags_as_unstable_is_counted_and_not_silent():
    row = {"p0": 0.6, "d0": True, "p": 0.4, "d": False, "warned": False, "unstable0": False}
    rows = [dict(row, unstable=True),                       # flipped, flagged unstable: not silent
            dict(row, unstable=False),                      # flipped, flagged nothing: silent
            dict(row, unstable=False, unstable0=True),      # flipped; the clean screening warned
            dict(row, p=0.7, d=True, unstable=True)]        # not flipped, flagged
    s = bench.summarise(rows)
    assert (s["flips"], s["unstable"], s["unstable_flips"], s["silent_flips"], s["clean_unstable_flips"]) == \
        (3, 2, 1, 2, 1)
