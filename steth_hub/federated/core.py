"""What a clinic and the server do with the model, without Flower: the pieces the Flower apps call.

Any torch classifier plugin (a :class:`steth_hub.train.TorchClassifier`) works through its generic
interface: ``from_config``, ``featurise``, ``fit_normalisation``, ``normalise``, ``logits``,
``torch_module``, ``set_trained_module`` and ``save_pretrained``. Nothing here names a plugin.

What travels between a clinic and the server is the model's state only, as named float arrays:

* ``net.<name>``: every floating-point tensor of the network's ``state_dict`` (weights and
  float buffers such as batch-norm statistics or a plugin's stored input normalisation);
* ``norm.<name>``: numeric attributes that the plugin's ``fit_normalisation`` sets on the
  classifier rather than in the network (the AST's average spectrum, mean and spread).

Round 0 agrees on the input normalisation: each clinic fits it on its own training clips and
sends only those statistics back (no weights were trained yet); the server averages them,
weighted by clips, and builds the starting network. Later rounds train locally
(:func:`train_local`, FedProx's proximal term when ``mu > 0``) and send the weights back.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steth_hub.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

NET_PREFIX, NORM_PREFIX = "net.", "norm."
#: attributes of a classifier never exchanged (its decision threshold is chosen separately)
NOT_STATE = {"threshold", "sample_rate", "predict_batch_size"}
#: local training settings read from an experiment's recipe (the rest of the recipe is for steth train)
TRAIN_DEFAULTS = {"learning_rate": 1e-3, "per_device_train_batch_size": 16, "weight_decay": 0.0, "seed": 42,
                  "class_weight": "balanced", "freeze_encoder": False, "max_grad_norm": 1.0}


# --------------------------------------------------------------------------- the experiment
def experiment_dict(config) -> dict:
    """An experiment config (file or dict) as a plain dict that can travel as JSON."""
    from steth_hub.experiment import load_experiment
    from steth_hub.preprocess import load_preset

    experiment = load_experiment(config)
    data = experiment.to_dict()
    data["preset"] = load_preset(experiment.preset).to_dict()  # a clinic may not have the server's preset files
    return data


def local_settings(experiment: dict, overrides: dict | None = None) -> dict:
    """Learning rate, batch size... for local training: the recipe's values, else :data:`TRAIN_DEFAULTS`."""
    recipe = dict(experiment.get("recipe") or {})
    settings = {k: recipe.get(k, v) for k, v in TRAIN_DEFAULTS.items()}
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return settings


def new_classifier(experiment: dict):
    """A fresh classifier of the experiment's plugin (any registered classifier), with its preset set."""
    from steth_hub.preprocess import load_preset
    from steth_hub.registry import get_registry
    from steth_hub.torch_classifier import TorchClassifier

    cls = get_registry().get("classifier", experiment["classifier"]).load()
    if not issubclass(cls, TorchClassifier):
        raise ConfigError(f"classifier {experiment['classifier']!r} is not a torch classifier; federated training "
                          "averages network weights", fix="use a torch classifier plugin (ast, densenet201, "
                                                          "efficientat...)")
    model = cls.from_config(copy.deepcopy(dict(experiment.get("model") or {})))
    model.preset = load_preset(experiment["preset"]).to_dict()
    return model


# --------------------------------------------------------------------------- a clinic's data
@dataclass
class ClinicData:
    """A clinic's clips, split by patient into local training and validation patients."""

    train: Any
    valid: Any | None
    facts: dict = field(default_factory=dict)


def load_clinic(corpus_dir, experiment: dict, *, valid_fraction: float = 0.2, seed: int = 0) -> ClinicData:
    """The clips of a corpus folder for the experiment's preset; ``valid_fraction`` of its patients held out."""
    from steth_hub.corpus import load_corpus
    from steth_hub.corpus.splits import patient_labels, validation_split
    from steth_hub.preprocess import cached_clips, load_preset

    path = Path(corpus_dir)
    if not path.is_dir():
        raise ConfigError("clinic corpus folder not found", path=path,
                          fix="pass a corpus written by `steth corpus import` or `steth federated partition`")
    corpus = load_corpus(path)
    clips, skipped, _ = cached_clips(corpus, load_preset(experiment["preset"]), progress=False)
    if len(clips) == 0:
        raise ConfigError("the clinic's corpus gave no clips for this preset", path=path,
                          fix="check the recordings (steth corpus info) and the experiment's preset")
    labels = patient_labels(list(clips.patient_ids), list(clips.labels))
    patients = sorted(labels)
    train, valid = clips, None
    if valid_fraction and len(patients) >= 3:
        train_p, valid_p = validation_split(patients, labels, float(valid_fraction), int(seed))
        train, valid = clips.for_patients(train_p), clips.for_patients(valid_p)
    facts = {"patients": len(patients), "train_patients": len(np.unique(train.patient_ids)),
             "valid_patients": len(np.unique(valid.patient_ids)) if valid is not None else 0,
             "asthma_patients": int(sum(labels.values())), "recordings": len(np.unique(clips.recording_ids)),
             "clips": len(clips), "train_clips": len(train), "skipped_recordings": len(skipped)}
    return ClinicData(train=train, valid=valid, facts=facts)


def featurise(model, clips, batch_size: int = 64):
    """Raw (unnormalised) features of a ClipSet, the same way steth train computes them."""
    from steth_hub.feature_cache import featurise_clipset

    if int(clips.sample_rate) != model.sample_rate:
        model.sample_rate = int(clips.sample_rate)
    return featurise_clipset(model, clips, batch_size)


# --------------------------------------------------------------------------- the exchanged state
def _is_numeric(value) -> bool:
    import torch

    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float, np.floating, np.integer)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f"
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _as_array(value) -> np.ndarray:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().astype(np.float32, copy=True)
    return np.asarray(value, dtype=np.float32).copy()


def _numeric_attributes(model) -> dict[str, np.ndarray]:
    return {k: _as_array(v) for k, v in vars(model).items()
            if not k.startswith("_") and k not in NOT_STATE and _is_numeric(v)}


def _float_buffers(model) -> dict[str, np.ndarray]:
    try:
        net = model.torch_module()
    except Exception:  # a plugin that builds its network in fit_normalisation (the AST) has none yet
        return {}
    if net is None:
        return {}
    state = net.state_dict()
    return {k: _as_array(v) for k, v in net.named_buffers() if k in state and v.is_floating_point()}


def _changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k, v in after.items()
                  if k not in before or before[k].shape != v.shape or not np.array_equal(before[k], v))


def fit_normalisation(model, features) -> list[str]:
    """Run the plugin's ``fit_normalisation`` and remember what it set: attributes outside the network
    (``norm.*``) and network buffers (``net.*``, e.g. DenseNet's mean/std). That is the normalisation
    state agreed in round 0 and held fixed afterwards. Returns its keys."""
    attrs, buffers = _numeric_attributes(model), _float_buffers(model)
    model.fit_normalisation(features)
    names = [NORM_PREFIX + k for k in _changed(attrs, _numeric_attributes(model))]
    names += [NET_PREFIX + k for k in _changed(buffers, _float_buffers(model))]
    model.__dict__["_federated_norm"] = sorted(set(model.__dict__.get("_federated_norm", [])) | set(names))
    return model._federated_norm


def normalisation_state(model) -> dict[str, np.ndarray]:
    """The normalisation state :func:`fit_normalisation` found (what round 0 exchanges)."""
    return {k: v for k, v in model_arrays(model).items() if k in set(getattr(model, "_federated_norm", []))}


def network_arrays(model) -> dict[str, np.ndarray]:
    """Every floating-point tensor of the network's state_dict (integer counters stay local)."""
    state = model.torch_module().state_dict()
    return {NET_PREFIX + k: _as_array(v) for k, v in state.items() if v.is_floating_point()}


def normalisation_arrays(model) -> dict[str, np.ndarray]:
    """The normalisation the plugin keeps outside its network (see :func:`fit_normalisation`)."""
    return {k: _as_array(getattr(model, k[len(NORM_PREFIX):])) for k in getattr(model, "_federated_norm", [])
            if k.startswith(NORM_PREFIX)}


def model_arrays(model) -> dict[str, np.ndarray]:
    """The whole exchanged state: network tensors and outside normalisation."""
    return {**network_arrays(model), **normalisation_arrays(model)}


def load_arrays(model, arrays: dict[str, np.ndarray]) -> None:
    """Put exchanged arrays back into a classifier whose network exists (same plugin and config)."""
    import torch

    net = model.torch_module()
    state = net.state_dict()
    new = {}
    for key, value in arrays.items():
        if key.startswith(NET_PREFIX):
            name = key[len(NET_PREFIX):]
            if name not in state:
                raise ModelError(f"the received weights hold {name!r}, which this network lacks",
                                 fix="every clinic and the server must use the same experiment config")
            if tuple(state[name].shape) != tuple(value.shape):
                raise ModelError(f"the received {name!r} has shape {tuple(value.shape)}, the network "
                                 f"{tuple(state[name].shape)}", fix="use the same experiment config everywhere")
            new[name] = torch.as_tensor(np.asarray(value)).to(state[name].dtype)
        elif key.startswith(NORM_PREFIX):
            name = key[len(NORM_PREFIX):]
            current = getattr(model, name, None)
            value = np.asarray(value, dtype=np.float32)
            if isinstance(current, torch.Tensor):
                setattr(model, name, torch.as_tensor(value.reshape(tuple(current.shape)).copy()))
            elif value.size == 1 and (current is None or isinstance(current, (int, float, np.floating))):
                setattr(model, name, float(value.reshape(-1)[0]))  # a scalar stays a Python float
            else:
                setattr(model, name, torch.as_tensor(value.copy()))
            model.__dict__["_federated_norm"] = sorted(set(model.__dict__.get("_federated_norm", [])) | {key})
    net.load_state_dict(new, strict=False)


def average(arrays: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
    """Weighted average of same-keyed array dicts (what FedAvg does)."""
    total = float(sum(weights))
    if not arrays or total <= 0:
        raise ValueError("nothing to average")
    keys = set(arrays[0])
    for other in arrays[1:]:
        if set(other) != keys:
            raise ModelError("clinics sent different model states", fix="use the same experiment config everywhere")
    return {k: sum(a[k].astype(np.float64) * (w / total) for a, w in zip(arrays, weights)).astype(np.float32)
            for k in sorted(keys)}


def initial_model(experiment: dict, feature_shape, normalisation: dict[str, np.ndarray], *, seed: int):
    """The server's starting model: the plugin's fresh network (seeded) with the agreed normalisation.

    ``fit_normalisation`` runs once on zeros of the clinics' feature shape so that plugins which
    build their network lazily (the AST) build it; the agreed statistics then replace what it fitted.
    """
    import torch

    model = new_classifier(experiment)
    torch.manual_seed(int(seed))
    fit_normalisation(model, torch.zeros((2, *[int(n) for n in feature_shape]), dtype=torch.float32))
    load_arrays(model, {k: v for k, v in normalisation.items()})
    return model


def model_from_arrays(experiment: dict, arrays: dict[str, np.ndarray], feature_shape, *, seed: int = 0):
    """A classifier holding exchanged ``arrays`` (for evaluation or saving)."""
    import torch

    model = new_classifier(experiment)
    torch.manual_seed(int(seed))
    fit_normalisation(model, torch.zeros((2, *[int(n) for n in feature_shape]), dtype=torch.float32))
    load_arrays(model, arrays)
    return model


# --------------------------------------------------------------------------- local training
def class_weights(labels: np.ndarray, setting: Any = "balanced") -> np.ndarray:
    """Balanced weights over the classes this clinic has; a class it lacks weighs 1 (it never occurs)."""
    labels = np.asarray(labels).astype(np.int64)
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    if setting in (None, "none", False):
        return np.ones(2, dtype=np.float32)
    present = counts > 0
    weights = np.ones(2)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def train_local(model, features, labels, *, epochs: float, settings: dict, proximal_mu: float = 0.0,
                seed: int = 0) -> dict:
    """Train the classifier's network on normalised ``features`` for ``epochs`` (AdamW, class-weighted loss).

    With ``proximal_mu > 0`` the loss adds FedProx's ``mu / 2 * ||w - w_global||^2`` over the
    trained parameters, ``w_global`` being the weights the round started from.
    """
    import time

    import torch

    started = time.perf_counter()
    torch.manual_seed(int(seed))
    net = model.torch_module()
    if settings.get("freeze_encoder") and hasattr(model, "head_parameters"):
        head = {id(p) for p in model.head_parameters(net)}
        trained = [p for p in net.parameters() if id(p) in head]
    else:
        trained = list(net.parameters())
    for p in net.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    start_weights = [p.detach().clone() for p in trained] if proximal_mu > 0 else None
    optimiser = torch.optim.AdamW(trained, lr=float(settings["learning_rate"]),
                                  weight_decay=float(settings["weight_decay"]))
    weights = torch.as_tensor(class_weights(labels, settings.get("class_weight")))
    y = torch.as_tensor(np.asarray(labels).astype(np.int64))
    n = len(y)
    batch = max(1, int(settings["per_device_train_batch_size"]))
    steps = max(1, int(round(float(epochs) * int(np.ceil(n / batch)))))
    generator = torch.Generator().manual_seed(int(seed))
    net.train(not settings.get("freeze_encoder"))  # a frozen encoder keeps its batch-norm statistics
    losses, step, order = [], 0, torch.empty(0, dtype=torch.long)
    while step < steps:
        if len(order) == 0:
            order = torch.randperm(n, generator=generator)
        index, order = order[:batch], order[batch:]
        logits = model.logits(net, features[index])
        loss = torch.nn.functional.cross_entropy(logits.float(), y[index], weight=weights)
        if start_weights is not None:
            loss = loss + proximal_mu / 2.0 * sum(((p - g) ** 2).sum() for p, g in zip(trained, start_weights))
        optimiser.zero_grad()
        loss.backward()
        if settings.get("max_grad_norm"):
            torch.nn.utils.clip_grad_norm_(trained, float(settings["max_grad_norm"]))
        optimiser.step()
        losses.append(float(loss.detach()))
        step += 1
    net.eval()
    for p in net.parameters():
        p.requires_grad_(True)
    return {"steps": steps, "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "seconds": round(time.perf_counter() - started, 3)}


# --------------------------------------------------------------------------- patient-level scores
def patient_scores(model, clips, features=None) -> dict:
    """Patient-level AUROC (with a patient-bootstrap interval) and the recording-level Youden threshold.

    ``features`` (normalised) may be given to skip featurising. Returns plain floats; a metric the
    patients cannot support (AUROC with one class) is ``None``.
    """
    from steth_hub.metrics import aggregate, bootstrap_ci, group_value, recording_threshold

    if features is None:
        probs = model.predict_proba(clips.waveforms)
    else:
        probs = model.predict_features(features)
    rec_ids, rec_p = aggregate(probs, clips.recording_ids)
    _, rec_patient = group_value(clips.patient_ids, clips.recording_ids)
    pat_ids, pat_p = aggregate(rec_p, rec_patient)
    by_patient = dict(zip(*group_value(np.asarray(clips.labels).astype(np.int64), clips.patient_ids)))
    y = np.array([int(by_patient[p]) for p in pat_ids], dtype=np.int64)
    ci = bootstrap_ci(y, pat_p, groups=pat_ids, n=1000, seed=0, metrics=("auroc",))
    two_classes = 0 < int(y.sum()) < len(y)
    return {"auroc": ci["auroc"]["value"], "auroc_low": ci["auroc"]["low"], "auroc_high": ci["auroc"]["high"],
            "patients": int(len(y)), "asthma_patients": int(y.sum()), "recordings": int(len(rec_ids)),
            "threshold": float(recording_threshold(clips.labels, probs, clips.recording_ids)) if two_classes else None,
            "patient_ids": [str(p) for p in pat_ids], "patient_probabilities": [float(p) for p in pat_p],
            "patient_labels": y.tolist()}


def write_json_line(path, record: dict) -> None:
    """Append one JSON line (the progress log the launcher follows); flushed and synced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
