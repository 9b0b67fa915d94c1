"""The server (Flower ServerApp, Message API): FedAvg or FedProx over the clinics, for N rounds.

The run is described by a job file (JSON) named in the run config (``job = "/path/job.json"``);
``steth federated run`` writes it. Round 0 agrees on the input normalisation (see
:mod:`steth_hub.federated.core`); rounds 1..N train at the clinics and average their weights.
After every round the global model is scored on the held-out patients (when the job names a
held-out corpus), the clinics' validation metrics are logged and the global state is saved as a
checkpoint, so a killed run restarts from the last completed round (``resume``). The final model
is an ordinary steth-hub model folder whose ``steth.json`` has a ``federated`` block.

Progress is a JSON-lines file (``progress.jsonl`` in the job's work folder), one line per round.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from steth_hub.federated import core

log = logging.getLogger(__name__)

app = ServerApp()

CHECKPOINT_WEIGHTS, CHECKPOINT_STATE, PROGRESS = "global.safetensors", "global.json", "progress.jsonl"


@app.main()
def main(grid: Grid, context: Context) -> None:
    job_path = str(context.run_config.get("job") or "")
    if not job_path:
        raise ValueError("no job file: run the app with `steth federated run` (it writes the job and passes "
                         "--run-config job=...)")
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    progress = Path(job["work"]) / PROGRESS
    try:
        run_job(grid, job)
    except BaseException as exc:
        core.write_json_line(progress, {"event": "failed", "error": f"{type(exc).__name__}: {exc}",
                                        "time": time.time()})
        raise


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(work: Path, arrays: dict[str, np.ndarray], state: dict) -> None:
    """The global state after a round: safetensors weights, then the JSON that points at them (both atomic)."""
    from safetensors.numpy import save_file

    from steth_hub.fileio import atomic_write_json

    work.mkdir(parents=True, exist_ok=True)
    tmp = work / f".{CHECKPOINT_WEIGHTS}.tmp"
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    tmp.replace(work / CHECKPOINT_WEIGHTS)
    atomic_write_json(work / CHECKPOINT_STATE, state)


def load_checkpoint(work: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    from safetensors.numpy import load_file

    if not (work / CHECKPOINT_STATE).is_file() or not (work / CHECKPOINT_WEIGHTS).is_file():
        return None
    state = json.loads((work / CHECKPOINT_STATE).read_text(encoding="utf-8"))
    return dict(load_file(str(work / CHECKPOINT_WEIGHTS))), state


# --------------------------------------------------------------------------- round 0
def wait_for_clinics(grid: Grid, n: int, timeout: float) -> list[int]:
    deadline = time.time() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n:
            return nodes
        if time.time() > deadline:
            raise TimeoutError(f"only {len(nodes)} of the {n} clinics needed connected within {timeout:.0f} s")
        time.sleep(1.0)


def agree_normalisation(grid: Grid, job: dict, config: ConfigRecord) -> tuple[dict, list, list[dict]]:
    """Round 0: each clinic's normalisation statistics, averaged by training clips; its counts."""
    nodes = wait_for_clinics(grid, int(job["min_clinics"]), float(job.get("connect_timeout", 600)))
    messages = [Message(RecordDict({"config": config}), message_type="train.normalise", dst_node_id=node)
                for node in nodes]
    replies = list(grid.send_and_receive(messages, timeout=float(job.get("round_timeout", 3600))))
    ok = [r for r in replies if not r.has_error()]
    for r in replies:
        if r.has_error():
            log.warning("clinic %s failed round 0: %s", r.metadata.src_node_id, r.error.reason)
    if len(ok) < int(job["min_clinics"]):
        reasons = "; ".join(r.error.reason for r in replies if r.has_error())
        raise RuntimeError(f"round 0: {len(ok)} clinic(s) answered, {job['min_clinics']} needed ({reasons})")
    stats = [{k: v.numpy() for k, v in r.content["arrays"].items()} for r in ok]
    metrics = [dict(r.content["metrics"]) for r in ok]
    shapes = {tuple(m["feature-shape"]) for m in metrics}
    if len(shapes) != 1:
        raise RuntimeError(f"clinics computed features of different shapes {sorted(shapes)}: their clips differ "
                           "(sample rate or length); use one preset and recordings the preset accepts")
    normalisation = core.average(stats, [float(m["num-examples"]) for m in metrics])
    clinics = [{"train_patients": int(m.get("train-patients", 0)), "valid_patients": int(m.get("valid-patients", 0)),
                "patients": int(m.get("patients", 0)), "asthma_patients": int(m.get("asthma-patients", 0)),
                "recordings": int(m.get("recordings", 0)), "train_clips": int(m["num-examples"])} for m in metrics]
    return normalisation, list(shapes.pop()), clinics


# --------------------------------------------------------------------------- metrics aggregation
def aggregate_train_metrics(records: list[RecordDict], key: str) -> MetricRecord:
    rows = [next(iter(r.metric_records.values())) for r in records]
    weights = np.array([float(m[key]) for m in rows])
    total = float(weights.sum()) or 1.0
    return MetricRecord({"num-examples": int(weights.sum()), "clinics": len(rows),
                         "train-loss": float(sum(w * float(m["train-loss"]) for w, m in zip(weights, rows)) / total)})


def aggregate_evaluate_metrics(records: list[RecordDict], key: str) -> MetricRecord:
    """Clinics' validation metrics: AUROC averaged over clinics that can compute it, the threshold by recordings."""
    rows = [next(iter(r.metric_records.values())) for r in records]
    aurocs = [(float(m["auroc"]), float(m[key])) for m in rows if float(m["auroc"]) >= 0]
    tw = [(float(m["threshold"]), float(m["threshold-weight"])) for m in rows if float(m["threshold-weight"]) > 0]
    out = {"clinics": len(rows), "patients": int(sum(int(m["patients"]) for m in rows)),
           "auroc": (sum(a * w for a, w in aurocs) / sum(w for _, w in aurocs)) if aurocs else -1.0,
           "threshold": (sum(t * w for t, w in tw) / sum(w for _, w in tw)) if tw else -1.0,
           "threshold-clinics": len(tw)}
    return MetricRecord(out)


# --------------------------------------------------------------------------- the run
def _strategy(job: dict, n_clinics: int):
    from flwr.serverapp.strategy import FedAvg, FedProx

    common = dict(min_train_nodes=int(job["min_clinics"]), min_evaluate_nodes=int(job["min_clinics"]),
                  min_available_nodes=int(job["min_clinics"]), train_metrics_aggr_fn=aggregate_train_metrics,
                  evaluate_metrics_aggr_fn=aggregate_evaluate_metrics)
    if job.get("strategy", "fedavg") == "fedprox":
        strategy = FedProx(proximal_mu=float(job.get("proximal_mu", 0.01)), **common)
    else:
        strategy = FedAvg(**common)
    if float(job.get("dp_noise") or 0) > 0:
        from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=float(job["dp_noise"]), clipping_norm=float(job.get("dp_clip", 1.0)),
            num_sampled_clients=max(1, n_clinics))
    return strategy


def _floats(record) -> dict:
    return {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in dict(record or {}).items()}


def run_job(grid: Grid, job: dict) -> None:
    work = Path(job["work"])
    progress = work / PROGRESS
    experiment = job["experiment"]
    seed = int(job.get("seed", 0))
    started = time.time()
    config = ConfigRecord({"experiment": json.dumps(experiment), "seed": seed,
                           "valid-fraction": float(job.get("valid_fraction", 0.2)),
                           "local-epochs": float(job.get("local_epochs", 1.0)),
                           "overrides": json.dumps(job.get("overrides") or {})})

    resumed = load_checkpoint(work) if job.get("resume") else None
    if resumed is not None:
        arrays, state = resumed
        done, shape, clinics, history = int(state["round"]), state["feature_shape"], state["clinics"], state["history"]
        fixed = {k: arrays[k] for k in state.get("fixed", [])}
        core.write_json_line(progress, {"event": "resumed", "round": done, "time": time.time()})
    else:
        if job.get("resume"):
            core.write_json_line(progress, {"event": "note", "message": "no checkpoint to resume: starting afresh"})
        normalisation, shape, clinics = agree_normalisation(grid, job, config)
        model = core.initial_model(experiment, shape, normalisation, seed=seed)
        arrays = core.model_arrays(model)
        fixed = {k: arrays[k] for k in normalisation}
        done, history = 0, []
        save_checkpoint(work, arrays, {"round": 0, "feature_shape": shape, "clinics": clinics, "history": history,
                                       "fixed": sorted(fixed)})
        core.write_json_line(progress, {"event": "round", "round": 0, "clinics": len(clinics),
                                        "patients": [c["patients"] for c in clinics], "time": time.time()})
    config["round-offset"] = done  # clinics seed each round's shuffling by its number
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}

    def settle(record: ArrayRecord) -> dict[str, np.ndarray]:
        """Aggregated arrays in their own shapes, the round-0 normalisation held fixed (no DP noise on it)."""
        out = {k: np.asarray(v.numpy(), dtype=np.float32).reshape(shapes[k]) for k, v in record.items()}
        out.update(fixed)
        return out

    model_bytes = int(sum(a.nbytes for a in arrays.values()))
    rounds = int(job["rounds"])
    heldout = core.load_clinic(job["heldout"], experiment, valid_fraction=0.0) if job.get("heldout") else None
    heldout_features = None
    if rounds <= done:
        core.write_json_line(progress, {"event": "note", "message": f"round {done} already done"})
    else:
        strategy = _strategy(job, len(clinics))
        seen: dict = {}

        def configure_train(server_round, arrays_record, cfg, g, _orig=strategy.configure_train):
            messages = list(_orig(server_round, arrays_record, cfg, g))
            seen["train_sent"] = len(messages)
            seen["round_started"] = time.time()
            return messages

        def aggregate_train(server_round, replies, _orig=strategy.aggregate_train):
            replies = list(replies)
            seen["train_ok"] = sum(1 for r in replies if not r.has_error())
            seen["train_failed"] = [str(r.error.reason)[:200] for r in replies if r.has_error()]
            aggregated, metrics = _orig(server_round, replies)
            if aggregated is not None:
                aggregated = ArrayRecord({k: Array(v) for k, v in settle(aggregated).items()})
            return aggregated, metrics

        def configure_evaluate(server_round, arrays_record, cfg, g, _orig=strategy.configure_evaluate):
            messages = list(_orig(server_round, arrays_record, cfg, g))
            seen["eval_sent"] = len(messages)
            return messages

        def aggregate_evaluate(server_round, replies, _orig=strategy.aggregate_evaluate):
            replies = list(replies)
            seen["eval_ok"] = sum(1 for r in replies if not r.has_error())
            metrics = _orig(server_round, replies)
            seen["clinic_metrics"] = _floats(metrics)
            return metrics

        strategy.configure_train, strategy.aggregate_train = configure_train, aggregate_train
        strategy.configure_evaluate, strategy.aggregate_evaluate = configure_evaluate, aggregate_evaluate

        def evaluate_fn(server_round: int, record: ArrayRecord):
            nonlocal heldout_features
            if server_round == 0:
                return None
            current = done + server_round
            state = settle(record)
            entry = {"event": "round", "round": current, "rounds": rounds,
                     "clinics_trained": seen.get("train_ok", 0), "clinics_sampled": seen.get("train_sent", 0),
                     "failures": seen.get("train_failed", []),
                     "bytes_down": model_bytes * (seen.get("train_sent", 0) + seen.get("eval_sent", 0)),
                     "bytes_up": model_bytes * seen.get("train_ok", 0), "model_bytes": model_bytes,
                     "seconds": round(time.time() - seen.get("round_started", time.time()), 1),
                     "clinic_validation": seen.get("clinic_metrics", {}), "time": time.time()}
            if heldout is not None:
                model = core.model_from_arrays(experiment, state, shape, seed=seed)
                if heldout_features is None:
                    heldout_features = core.featurise(model, heldout.train)
                scores = core.patient_scores(model, heldout.train, features=model.normalise(heldout_features))
                entry["heldout"] = {k: scores[k] for k in ("auroc", "auroc_low", "auroc_high", "patients",
                                                           "asthma_patients")}
            history.append({k: v for k, v in entry.items() if k not in {"event", "time"}})
            save_checkpoint(work, state, {"round": current, "feature_shape": shape, "clinics": clinics,
                                          "history": history, "fixed": sorted(fixed)})
            core.write_json_line(progress, entry)
            return MetricRecord({"round": current})

        result = strategy.start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                                num_rounds=rounds - done, timeout=float(job.get("round_timeout", 3600)),
                                train_config=config, evaluate_config=config, evaluate_fn=evaluate_fn)
        if len(result.arrays):
            arrays = settle(result.arrays)
        if not history or int(history[-1]["round"]) != rounds:
            raise RuntimeError(f"the run stopped after round {history[-1]['round'] if history else done} "
                               f"of {rounds}")
    save_model(job, arrays, shape, clinics, history, seconds=time.time() - started)
    core.write_json_line(progress, {"event": "done", "out": job["out"], "time": time.time()})


def save_model(job: dict, arrays: dict, shape, clinics: list[dict], history: list[dict], *, seconds: float) -> None:
    """The final global model as an ordinary steth-hub model folder with a ``federated`` block in steth.json."""
    experiment = job["experiment"]
    model = core.model_from_arrays(experiment, arrays, shape, seed=int(job.get("seed", 0)))
    model.set_trained_module(model.torch_module())  # a plugin's end-of-training step (the AST folds its centring)
    last = history[-1] if history else {}
    threshold = float((last.get("clinic_validation") or {}).get("threshold", -1.0))
    if not math.isfinite(threshold) or threshold < 0:
        threshold, threshold_from = 0.5, "no clinic had validation patients of both classes: 0.5"
    else:
        threshold_from = ("the clinics' maximum Youden's J on their own validation recordings, averaged by "
                          "recordings (clinics with both classes only)")
    model.threshold = threshold
    dp = None
    if float(job.get("dp_noise") or 0) > 0:
        dp = {"mechanism": "Flower DifferentialPrivacyServerSideFixedClipping (Gaussian noise on the averaged "
                           "update)", "noise_multiplier": float(job["dp_noise"]),
              "clipping_norm": float(job.get("dp_clip", 1.0))}
    federated = {
        "framework": "flower",
        "strategy": job.get("strategy", "fedavg"),
        "proximal_mu": float(job.get("proximal_mu", 0.0)) if job.get("strategy") == "fedprox" else None,
        "rounds": int(job["rounds"]), "local_epochs": float(job.get("local_epochs", 1.0)),
        "min_clinics": int(job["min_clinics"]), "clinics": len(clinics),
        "patients_per_clinic": [int(c["patients"]) for c in clinics],
        "asthma_patients_per_clinic": [int(c["asthma_patients"]) for c in clinics],
        "differential_privacy": dp,
        "threshold_from": threshold_from,
        "rounds_log": [{k: r.get(k) for k in ("round", "clinics_trained", "clinics_sampled", "bytes_down",
                                              "bytes_up", "seconds", "heldout")} for r in history],
        "model_bytes": int(sum(np.asarray(a).nbytes for a in arrays.values())),
        "wall_seconds": round(seconds, 1),
    }
    model.metadata["federated"] = federated
    model.metadata["training"] = {
        "experiment": experiment, "federated": True,
        "n_patients": int(sum(c["train_patients"] for c in clinics)),
        "threshold_from": threshold_from,
    }
    if job.get("name"):
        model.metadata["name"] = job["name"]
    model.save_pretrained(job["out"])
