"""Federated training with Flower (steth_hub/federated): partitions, the exchanged state, a real deployment.

The deployment test starts Flower's deployment engine on 127.0.0.1 (a SuperLink and two SuperNodes),
trains a tiny AST on a handful of shared recordings, kills one clinic in the middle of a round and
restarts the server run from its saved global model. Nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ("name: fed-tiny\nclassifier: ast\n"
        "model: {size: tiny, num_hidden_layers: 1, front_end: {sampling_rate: 4000, num_mel_bins: 32}}\n"
        "preset: excerpt-10s\nrecipe: {learning_rate: 1.0e-3, per_device_train_batch_size: 8, seed: 42}\n")


def test_importing_the_federated_modules_imports_neither_torch_nor_flwr():
    code = ("import sys, steth_hub.federated, steth_hub.commands.federated, steth_hub.cli; "
            "bad = [m for m in ('torch', 'flwr', 'transformers', 'datasets') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_flower_app_config_names_the_package_components():
    import tomllib

    from steth_hub.federated.deploy import APP_DIR

    app = tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "steth_hub.federated.server_app:app",
                                 "clientapp": "steth_hub.federated.client_app:app"}
    assert "job" in app["config"]


# --------------------------------------------------------------------------- partitions
@pytest.fixture(scope="module")
def example_merged(examples_dir, tmp_path_factory):
    """The shipped KAUH and ICBHI examples imported and merged (7 patients, 2 sources)."""
    from steth_hub.corpus import import_corpus, merge_corpora

    root = tmp_path_factory.mktemp("examples")
    import_corpus("kauh", examples_dir / "kauh", root / "kauh", n_folds=2)
    import_corpus("icbhi", examples_dir / "icbhi", root / "icbhi", n_folds=2)
    merge_corpora([root / "kauh", root / "icbhi"], root / "all", n_folds=2)
    return root / "all"


def _patients(corpus_dir) -> set:
    from steth_hub.corpus import load_corpus

    return set(load_corpus(corpus_dir).column("patient_id"))


def test_partition_by_source_is_patient_disjoint_with_a_heldout_fold(example_merged, tmp_path):
    from steth_hub.cli import main
    from steth_hub.corpus import load_corpus

    corpus = load_corpus(example_merged)
    folds = corpus.splits["folds"]
    fold = next(f for f in (0, 1) if any(folds[p] != f for p in folds if p.startswith("icbhi:")))  # keep an ICBHI
    out = tmp_path / "parts"
    result = CliRunner().invoke(main, ["federated", "partition", str(example_merged), str(out), "--by", "source",
                                       "--clinics", "2", "--holdout-fold", str(fold)])
    assert result.exit_code == 0, result.output
    assert "clinic-1" in result.output and "clinic-2" in result.output and f"heldout (fold {fold})" in result.output
    summary = json.loads((out / "partition.json").read_text())
    assert summary["patient_disjoint"] is True
    heldout = {p for p, f in folds.items() if f == fold}
    parts = [_patients(out / "clinic-1"), _patients(out / "clinic-2"), _patients(out / "heldout")]
    assert parts[2] == heldout
    assert sum(len(p) for p in parts) == len(set().union(*parts)) == len(_patients(example_merged))
    sources = [{p.split(":")[0] for p in part} for part in parts[:2]]
    assert sorted(map(sorted, sources)) == [["icbhi"], ["kauh"]]  # one source per clinic
    for i, row in enumerate(summary["clinics"]):
        assert row["patients"] == len(parts[i])


def test_partition_random_and_device_and_clear_errors(example_merged, tmp_path):
    from steth_hub.cli import main
    from steth_hub.federated.deploy import partition_corpus

    summary = partition_corpus(example_merged, tmp_path / "rand", by="random", clinics=2, seed=1)
    a, b = _patients(tmp_path / "rand" / "clinic-1"), _patients(tmp_path / "rand" / "clinic-2")
    assert not a & b and len(a | b) == len(_patients(example_merged))
    assert {c["asthma_patients"] for c in summary["clinics"]} == {1}  # the 2 asthma patients dealt one each
    device = partition_corpus(example_merged, tmp_path / "dev", by="device", clinics=3)
    assert len(device["clinics"]) == 3 and sum(c["patients"] for c in device["clinics"]) == 7

    result = CliRunner().invoke(main, ["federated", "partition", str(example_merged), str(tmp_path / "x"),
                                       "--by", "source", "--clinics", "3"])
    assert result.exit_code == 2 and "only 2 group(s)" in result.output and "--by random" in result.output
    result = CliRunner().invoke(main, ["federated", "partition", str(example_merged), str(tmp_path / "y"),
                                       "--holdout-fold", "7"])
    assert result.exit_code == 2 and "no fold 7" in result.output


# --------------------------------------------------------------------------- the exchanged state
def test_normalisation_agreement_local_training_fedprox_and_state_round_trip(example_merged, tmp_path):
    import torch

    from steth_hub.federated import core

    experiment = core.experiment_dict(_write(tmp_path / "tiny.yaml", TINY))
    data = core.load_clinic(example_merged, experiment, valid_fraction=0.0)
    halves = [data.train.for_patients(sorted(set(data.train.patient_ids))[i::2]) for i in range(2)]

    stats, counts = [], []
    for half in halves:  # what two clinics send in round 0: statistics only
        model = core.new_classifier(experiment)
        features = core.featurise(model, half)
        core.fit_normalisation(model, features)
        stats.append(core.normalisation_state(model))
        counts.append(len(half))
        shape = list(features.shape[1:])
    assert set(stats[0]) == {"norm.bin_mean", "norm.mean", "norm.std"}  # the AST keeps them outside the network
    agreed = core.average(stats, counts)
    pooled = core.new_classifier(experiment)
    core.fit_normalisation(pooled, core.featurise(pooled, data.train))
    np.testing.assert_allclose(agreed["norm.bin_mean"], pooled.bin_mean.numpy(), rtol=1e-5, atol=1e-5)  # exact mean

    start = core.initial_model(experiment, shape, agreed, seed=0)
    again = core.initial_model(experiment, shape, agreed, seed=0)
    state0 = core.model_arrays(start)
    assert all(np.array_equal(state0[k], v) for k, v in core.model_arrays(again).items())  # seeded start
    assert all(k.startswith(("net.", "norm.")) for k in state0)

    x = start.normalise(core.featurise(start, data.train))
    settings = core.local_settings(experiment)
    plain = core.model_from_arrays(experiment, state0, shape)
    core.train_local(plain, x, data.train.labels, epochs=2, settings=settings, seed=1)
    prox = core.model_from_arrays(experiment, state0, shape)
    core.train_local(prox, x, data.train.labels, epochs=2, settings=settings, proximal_mu=1e4, seed=1)

    def moved(model):
        new = core.network_arrays(model)
        return sum(float(np.abs(new[k] - state0[k]).sum()) for k in new)

    assert moved(plain) > 0 and moved(prox) < moved(plain)  # FedProx's term holds the weights near the start

    copy = core.model_from_arrays(experiment, core.model_arrays(plain), shape, seed=123)
    with torch.no_grad():
        np.testing.assert_allclose(copy.predict_features(x), plain.predict_features(x), rtol=1e-6, atol=1e-6)
    scores = core.patient_scores(copy, data.train, features=x)
    assert scores["patients"] == len(set(data.train.patient_ids)) and scores["asthma_patients"] == 2
    assert 0 <= scores["auroc"] <= 1


def test_class_weights_for_a_clinic_without_asthma_patients():
    from steth_hub.federated.core import class_weights

    assert class_weights(np.array([0, 0, 0])).tolist() == [1.0, 1.0]
    assert class_weights(np.array([0, 0, 0, 1])).tolist() == pytest.approx([4 / 6, 2.0])


def test_run_refuses_a_non_torch_classifier_and_bad_folders(example_merged, tmp_path):
    from steth_hub.cli import main

    config = _write(tmp_path / "mfcc.yaml", "classifier: mfcc-logreg\npreset: excerpt-10s\n")
    result = CliRunner().invoke(main, ["federated", "run", "--config", str(config), "--clinics",
                                       str(example_merged), "--rounds", "1", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "not a torch classifier" in result.output
    config = _write(tmp_path / "tiny.yaml", TINY)
    result = CliRunner().invoke(main, ["federated", "run", "--config", str(config), "--clinics", str(tmp_path),
                                       "--rounds", "1", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "no corpus.json" in result.output
    result = CliRunner().invoke(main, ["federated", "run", "--config", str(config), "--clinics",
                                       str(example_merged), "--rounds", "1", "--out", str(tmp_path / "m"),
                                       "--resume"])
    assert result.exit_code == 2 and "nothing to resume" in result.output
    result = CliRunner().invoke(main, ["federated", "run", "--config", str(config), "--clinics",
                                       str(example_merged), str(example_merged), "--rounds", "1", "--out",
                                       str(tmp_path / "m")])
    assert result.exit_code == 2 and "given twice" in result.output
    result = CliRunner().invoke(main, ["federated", "run", "--config", str(config), "--superlink",
                                       "127.0.0.1:1", "--rounds", "1", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "--min-clinics" in result.output
    result = CliRunner().invoke(main, ["federated", "clinic", "--superlink", "127.0.0.1:1", "--corpus",
                                       str(example_merged)])
    assert result.exit_code == 2 and "--root-certificates" in result.output


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- a real deployment on 127.0.0.1
KAUH_FILES = 6      # 3 asthma and 3 other patients, one recording each
ICBHI_PATIENTS = ("111", "113", "116", "118")   # recordings the excerpt-10s preset accepts (not clipped)


@pytest.fixture(scope="module")
def shared_partition(shared_data, tmp_path_factory):
    """A handful of shared recordings, merged and partitioned by source with a held-out fold."""
    import re

    from steth_hub.corpus import import_corpus, merge_corpora
    from steth_hub.federated.deploy import partition_corpus

    root = tmp_path_factory.mktemp("fed")
    (root / "src" / "kauh").mkdir(parents=True)
    (root / "src" / "icbhi").mkdir(parents=True)
    subjects: dict[str, list[Path]] = {}
    for f in sorted((shared_data / "kauh").glob("*.wav")):
        subjects.setdefault(re.match(r"[BDE]P(\d+)_", f.name).group(1), []).append(f)
    asthma = [s for s, fs in subjects.items() if "asthma" in fs[0].name.lower()][:KAUH_FILES // 2 + 1]
    other = [s for s, fs in subjects.items() if "asthma" not in fs[0].name.lower()][:KAUH_FILES // 2 + 1]
    for s in asthma + other:
        shutil.copy(subjects[s][0], root / "src" / "kauh")
    for f in sorted((shared_data / "icbhi").glob("*.wav")):
        if f.name.split("_")[0] in ICBHI_PATIENTS and not any((root / "src" / "icbhi").glob(f.name.split("_")[0] + "_*")):
            shutil.copy(f, root / "src" / "icbhi")
    shutil.copy(shared_data / "icbhi" / "patient_diagnosis.csv", root / "src" / "icbhi")
    import_corpus("kauh", root / "src" / "kauh", root / "kauh", n_folds=2)
    import_corpus("icbhi", root / "src" / "icbhi", root / "icbhi", n_folds=2)
    merge_corpora([root / "kauh", root / "icbhi"], root / "all", n_folds=3)
    partition_corpus(root / "all", root / "parts", by="source", clinics=2, holdout_fold=0)
    config = _write(root / "tiny.yaml", TINY)
    return root, config


def _is_loopback(address) -> bool:
    if not address:
        return True
    return ipaddress.ip_address(address.ip).is_loopback


def _connections_of(pids) -> list:
    import psutil

    found = []
    for pid in pids:
        try:
            found.extend(psutil.Process(pid).net_connections(kind="inet"))
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.timeout(900)
def test_a_loopback_deployment_survives_a_killed_clinic_restarts_and_loads(shared_partition, tmp_path):
    import psutil

    import steth_hub
    from steth_hub.cli import main
    from steth_hub.federated.deploy import _alive, run_federation

    root, config = shared_partition
    parts = root / "parts"
    clinics = [parts / "clinic-1", parts / "clinic-2"]
    kauh_clinic = 0 if "kauh" in next(iter(_patients(clinics[0]))) else 1
    out, log = tmp_path / "model", tmp_path / "messages.jsonl"
    seen = {"connections": [], "killed": []}

    def kill_clinic_mid_round(processes, name):
        """Kill the clinic while it is computing its reply (its flwr-clientapp process is running)."""
        deadline = time.time() + 240
        while time.time() < deadline:
            for pid in processes.pids_of(name)[1:]:
                try:
                    if "flwr-clientapp" in " ".join(psutil.Process(pid).cmdline()):
                        processes.snapshot()
                        seen["connections"] = _connections_of(processes.alive())
                        seen["killed"] = processes.kill(name)
                        return
                except psutil.Error:
                    continue
            time.sleep(0.2)

    def on_progress(entry, processes):
        if entry.get("event") == "round" and entry["round"] == 0:  # round 1 starts now: kill the ICBHI clinic
            name = f"clinic-{2 - kauh_clinic}"
            threading.Thread(target=kill_clinic_mid_round, args=(processes, name), daemon=True).start()

    lines: list[str] = []
    summary = run_federation(config, clinics, 1, out, heldout=parts / "heldout", min_clinics=1,
                             strategy="fedprox", proximal_mu=0.1, threads=1, message_log=log, echo=lines.append,
                             on_progress=on_progress, timeout=600)
    assert seen["killed"], "the clinic was not killed mid-round"
    round1 = [e for e in summary["entries"] if e.get("event") == "round" and e["round"] == 1][0]
    assert round1["clinics_sampled"] == 2 and round1["clinics_trained"] == 1 and round1["failures"]
    assert any(line.startswith("round 1/1: 1/2 clinics trained") for line in lines), lines
    assert round1["heldout"]["patients"] >= 2

    # no process outlives the run, and every socket they held was on loopback
    assert summary["alive_after_stop"] == []
    assert not [int(pid) for pid in summary["pids"] if _alive(int(pid))]
    assert seen["connections"], "no connection was observed"
    outside = [c for c in seen["connections"] if not (_is_loopback(c.laddr) and _is_loopback(c.raddr))]
    assert not outside, outside

    # only the model state travelled: every reply holds model tensors and scalar metrics, nothing else
    messages = [json.loads(line) for line in log.read_text().splitlines()]
    assert {m["message_type"] for m in messages} >= {"train.normalise", "train", "evaluate"}
    model = steth_hub.from_pretrained(str(out))
    names = set(model.torch_module().state_dict())
    for m in messages:
        assert not m["config_records"]
        assert set(m["metric_records"]) <= {"metrics"}
        assert all(kind in ("int", "float", "list") for kind in m["metric_records"].get("metrics", {}).values())
        for arrays in m["array_records"].values():
            for key, spec in arrays.items():
                assert key.startswith(("net.", "norm.")), key
                assert key[4:] in names or key.startswith("norm."), key
                assert spec["dtype"] == "float32"
        if m["message_type"] == "train":
            assert set(m["array_records"]["arrays"]) == {"net." + n for n in names} | {
                "norm.bin_mean", "norm.mean", "norm.std"}
        if m["message_type"] == "evaluate":
            assert not m["array_records"]

    # a restarted server run continues from the saved global model (with DP noise this time)
    lines.clear()
    summary = run_federation(config, clinics, 2, out, heldout=parts / "heldout", min_clinics=2, resume=True,
                             dp_noise=0.01, dp_clip=100.0, threads=1, echo=lines.append, timeout=600)
    events = [(e["event"], e.get("round")) for e in summary["entries"]]
    assert events[0] == ("resumed", 1) and ("round", 2) in events and ("round", 1) not in events, events
    assert summary["alive_after_stop"] == []

    meta = json.loads((out / "steth.json").read_text())
    fed = meta["federated"]
    assert fed["rounds"] == 2 and fed["clinics"] == 2 and len(fed["patients_per_clinic"]) == 2
    assert all(isinstance(n, int) for n in fed["patients_per_clinic"])
    assert fed["differential_privacy"]["noise_multiplier"] == 0.01
    assert [r["round"] for r in fed["rounds_log"]] == [1, 2]

    # an ordinary model folder: steth screen --model and from_pretrained
    wav = next((root / "src" / "kauh").glob("*.wav"))
    result = CliRunner().invoke(main, ["screen", "--model", str(out), str(wav), "--json"])
    assert result.exit_code == 0, result.output
    assert 0.0 <= json.loads(result.output)["results"][0]["probability"] <= 1.0
    loaded = steth_hub.from_pretrained(str(out))
    assert loaded.plugin_name == "ast" and loaded.metadata["federated"]["rounds"] == 2


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.timeout(600)
def test_a_failed_run_exits_non_zero_and_stops_its_processes(shared_partition, tmp_path):
    """`flwr run` exits 0 when the run fails; steth federated run must not."""
    from steth_hub.cli import main

    root, config = shared_partition
    broken = tmp_path / "broken-clinic"
    shutil.copytree(root / "parts" / "clinic-1", broken)
    shutil.rmtree(broken / "dataset")  # the clinic cannot read its corpus: round 0 fails
    result = CliRunner().invoke(main, ["federated", "run", "--config", str(config), "--clinics", str(broken),
                                       "--rounds", "1", "--out", str(tmp_path / "m"), "--threads", "1",
                                       "--timeout", "300"])
    assert result.exit_code == 2, result.output
    assert "the federated run failed" in result.output and "round 0" in result.output
    assert not (tmp_path / "m" / "steth.json").exists()
    from steth_hub.federated.deploy import _alive

    pids = json.loads((tmp_path / "m.federated" / "pids.json").read_text())["pids"]
    assert pids and not [p for p in pids if _alive(int(p))]


def test_the_same_code_federates_another_torch_plugin_whose_normalisation_lives_in_its_network(example_merged,
                                                                                               tmp_path):
    """DenseNet keeps its input mean/std as network buffers: round 0 finds and agrees on those instead."""
    from steth_hub.federated import core

    experiment = core.experiment_dict({
        "classifier": "densenet201", "preset": "excerpt-10s",
        "model": {"architecture": "densenet121", "model_kwargs": {"growth_rate": 8, "block_config": [2, 2]}},
        "recipe": {"per_device_train_batch_size": 4}})
    data = core.load_clinic(example_merged, experiment, valid_fraction=0.0)
    clips = data.train.subset(np.arange(min(6, len(data.train))))
    model = core.new_classifier(experiment)
    features = core.featurise(model, clips)
    assert core.fit_normalisation(model, features) == ["net.mean", "net.std"]
    state = core.normalisation_state(model)
    start = core.initial_model(experiment, features.shape[1:], state, seed=0)
    np.testing.assert_array_equal(core.model_arrays(start)["net.std"], state["net.std"])
    core.train_local(start, start.normalise(features), clips.labels, epochs=1, settings=core.local_settings(
        experiment), seed=0)
    assert set(core.model_arrays(start)) == set(core.network_arrays(start))  # nothing outside the network


def test_a_scalar_statistic_stays_a_float_whatever_shape_it_comes_back_in(example_merged, tmp_path):
    import torch

    from steth_hub.federated import core

    experiment = core.experiment_dict(_write(tmp_path / "tiny.yaml", TINY))
    model = core.new_classifier(experiment)
    core.fit_normalisation(model, torch.zeros((2, 10, 32)))
    core.load_arrays(model, {"norm.mean": np.array([-3.5], dtype=np.float32),
                             "norm.bin_mean": np.zeros((32,), dtype=np.float32)})
    assert isinstance(model.mean, float) and model.mean == -3.5 and tuple(model.bin_mean.shape) == (32,)


def test_the_efficientat_plugin_goes_through_the_same_code_unchanged(example_merged):
    """An AudioSet-encoder classifier (normalisation in network buffers, a head to train alone)."""
    from steth_hub.federated import core

    experiment = core.experiment_dict({"classifier": "efficientat", "preset": "excerpt-10s",
                                       "model": {"encoder": "mn04", "mode": "finetune"},
                                       "recipe": {"per_device_train_batch_size": 4, "freeze_encoder": True}})
    data = core.load_clinic(example_merged, experiment, valid_fraction=0.0)
    clips = data.train.subset(np.arange(min(6, len(data.train))))
    model = core.new_classifier(experiment)
    features = core.featurise(model, clips)
    assert core.fit_normalisation(model, features) == ["net.embedding_mean", "net.embedding_std"]
    start = core.initial_model(experiment, features.shape[1:], core.normalisation_state(model), seed=0)
    before = core.model_arrays(start)
    core.train_local(start, start.normalise(features), clips.labels, epochs=1,
                     settings=core.local_settings(experiment), seed=0)
    after = core.model_arrays(start)
    changed = {k for k in after if not np.array_equal(after[k], before[k])}
    assert changed and all(k.startswith("net.head.") for k in changed)  # freeze_encoder: the head alone learns


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.timeout(600)
def test_ctrl_c_or_sigterm_stops_every_process_and_the_run_resumes_from_its_last_round(shared_partition, tmp_path):
    import signal

    from steth_hub.federated.deploy import _alive

    root, config = shared_partition
    parts = root / "parts"
    out = tmp_path / "model"
    argv = [sys.executable, "-m", "steth_hub.cli", "federated", "run", "--config", str(config), "--clinics",
            str(parts / "clinic-1"), str(parts / "clinic-2"), "--rounds", "2", "--out", str(out), "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line.rstrip())
        if line.startswith("round 1/2"):
            proc.send_signal(signal.SIGTERM)  # what a terminal's Ctrl-C does to the launcher, by another name
            break
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, seen + [rest]
    assert "every process the run started was stopped" in rest
    pids = json.loads((tmp_path / "model.federated" / "pids.json").read_text())["pids"]
    assert len(pids) >= 4 and not [p for p in pids if _alive(int(p))]
    assert not (out / "steth.json").exists()

    result = subprocess.run(argv + ["--resume"], capture_output=True, text=True, env=env, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed from the global model saved after round 1" in result.stdout
    assert "round 2/2" in result.stdout and "round 1/2" not in result.stdout and "round 0" not in result.stdout
    assert json.loads((out / "steth.json").read_text())["federated"]["rounds"] == 2
