"""A clinic (Flower ClientApp, Message API): trains and validates the global model on its own patients.

The clinic's corpus folder is named by the SuperNode's node config (``corpus = "/path"``); the
recordings never leave it. Replies carry only the model state the server sent (updated) and
scalar counts and metrics (see :mod:`steth_hub.federated.core`). When the node config names a
``message-log`` file, every reply's structure (record names, array names, shapes and dtypes,
metric names) is appended to it, so a deployment can be audited (and is, in the tests).
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from steth_hub.federated import core

log = logging.getLogger(__name__)


def _audit_mod(msg: Message, context: Context, call_next) -> Message:
    """Record what leaves the clinic (names, shapes and dtypes only) when ``message-log`` is configured."""
    reply = call_next(msg, context)
    path = str(context.node_config.get("message-log") or "")
    if path and not reply.has_error():
        content = reply.content
        record = {"message_type": msg.metadata.message_type, "clinic": str(context.node_config.get("clinic", "")),
                  "array_records": {name: {k: {"shape": list(a.shape), "dtype": a.dtype}
                                           for k, a in rec.items()} for name, rec in content.array_records.items()},
                  "metric_records": {name: {k: type(v).__name__ for k, v in rec.items()}
                                     for name, rec in content.metric_records.items()},
                  "config_records": {name: sorted(rec) for name, rec in content.config_records.items()},
                  "bytes": int(sum(r.count_bytes() for r in content.values()))}
        core.write_json_line(path, record)
    return reply


app = ClientApp(mods=[_audit_mod])


def _setup(msg: Message, context: Context):
    config = msg.content["config"]
    experiment = json.loads(str(config["experiment"]))
    corpus = context.node_config.get("corpus")
    if not corpus:
        raise ValueError("this SuperNode has no corpus: start it with --node-config 'corpus=\"/path/to/corpus\"' "
                         "(steth federated clinic --corpus DIR does)")
    seed = int(config.get("seed", 0))
    data = core.load_clinic(str(corpus), experiment, valid_fraction=float(config.get("valid-fraction", 0.2)),
                            seed=seed)
    return config, experiment, data, seed


def _threads() -> None:
    import os

    import torch

    threads = int(os.environ.get("STETH_FEDERATED_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)


def _received(msg: Message) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in msg.content["arrays"].items()}


def _model_with(experiment: dict, arrays: dict, features):
    """The experiment's classifier holding the received state (its network built on the features' shape)."""
    import torch

    model = core.new_classifier(experiment)
    core.fit_normalisation(model, torch.zeros((2, *features.shape[1:]), dtype=torch.float32))
    core.load_arrays(model, arrays)
    return model


@app.train("normalise")
def normalise(msg: Message, context: Context) -> Message:
    """Round 0: the input normalisation fitted on this clinic's training clips (statistics, no weights)."""
    _threads()
    import torch

    _, experiment, data, seed = _setup(msg, context)
    model = core.new_classifier(experiment)
    features = core.featurise(model, data.train)
    torch.manual_seed(seed)
    core.fit_normalisation(model, features)
    arrays = core.normalisation_state(model)
    metrics = {"num-examples": int(len(data.train)), "feature-shape": [int(n) for n in features.shape[1:]],
               "sample-rate": int(data.train.sample_rate)}
    metrics.update({k.replace("_", "-"): int(v) for k, v in data.facts.items()})
    return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                               "metrics": MetricRecord(metrics)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of local training from the global weights; replies with the updated weights."""
    _threads()
    config, experiment, data, seed = _setup(msg, context)
    received = _received(msg)
    model = core.new_classifier(experiment)
    features = core.featurise(model, data.train)
    model = _model_with(experiment, received, features)
    x = model.normalise(features)
    settings = core.local_settings(experiment, json.loads(str(config.get("overrides", "{}"))))
    rnd = int(config.get("server-round", 1)) + int(config.get("round-offset", 0))
    stats = core.train_local(model, x, data.train.labels, epochs=float(config.get("local-epochs", 1.0)),
                             settings=settings, proximal_mu=float(config.get("proximal-mu", 0.0)), seed=seed + rnd)
    updated = core.model_arrays(model)
    reply = {k: updated[k] for k in received}  # exactly the state that was sent, trained
    metrics = {"num-examples": int(len(data.train)), "train-loss": float(stats["train_loss"]),
               "steps": int(stats["steps"]), "seconds": float(stats["seconds"])}
    return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in reply.items()}),
                               "metrics": MetricRecord(metrics)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Patient-level validation metrics of the global model on this clinic's validation patients."""
    _threads()
    _, experiment, data, _ = _setup(msg, context)
    metrics = {"num-examples": 0, "auroc": float("nan"), "threshold": 0.5, "threshold-weight": 0.0,
               "patients": 0, "asthma-patients": 0}
    if data.valid is not None and len(data.valid):
        model = core.new_classifier(experiment)
        features = core.featurise(model, data.valid)
        model = _model_with(experiment, _received(msg), features)
        scores = core.patient_scores(model, data.valid, features=model.normalise(features))
        two_classes = scores["threshold"] is not None
        metrics.update({"num-examples": int(scores["recordings"]),
                        "auroc": float(scores["auroc"]) if scores["auroc"] is not None else float("nan"),
                        "threshold": float(scores["threshold"]) if two_classes else 0.5,
                        "threshold-weight": float(scores["recordings"]) if two_classes else 0.0,
                        "patients": int(scores["patients"]), "asthma-patients": int(scores["asthma_patients"])})
    metrics = {k: (v if not (isinstance(v, float) and math.isnan(v)) else -1.0) for k, v in metrics.items()}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
