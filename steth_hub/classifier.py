"""Where a clip is classified: the interface every classifier plugin implements.

A classifier takes clips (float32 waveforms at its ``sample_rate``, already preprocessed
with its ``preset``) and returns P(asthma) per clip. It can be built from a config,
trained, saved to a folder and loaded back. Every saved folder holds ``steth.json``
naming the plugin that reads it, so :func:`load_classifier` looks the plugin up in the
registry — never an import path taken from a file.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from steth_hub.errors import ModelError

#: label names, index = class id
LABELS: tuple[str, str] = ("not_asthma", "asthma")
STETH_METADATA = "steth.json"
#: weight files that need pickle to load; refused everywhere
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


class Classifier(abc.ABC):
    """Base class of classifier plugins.

    Attributes:
        plugin_name: the name the plugin registers (written to ``steth.json``).
        sample_rate: the rate clips must have.
        threshold: decision threshold on P(asthma), chosen on training/validation data.
        preset: the preprocessing preset (a dict) the model was trained with.
        metadata: everything else saved in ``steth.json`` (training data, evaluation...).
    """

    plugin_name: ClassVar[str] = ""

    def __init__(self, *, sample_rate: int = 16000, threshold: float = 0.5, preset: dict | None = None,
                 metadata: dict | None = None):
        self.sample_rate = int(sample_rate)
        self.threshold = float(threshold)
        self.preset = dict(preset or {})
        self.metadata = dict(metadata or {})

    # -- building and training ------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: dict) -> "Classifier":
        """A fresh (untrained, or pretrained-initialised) model from a config dict."""

    @abc.abstractmethod
    def fit(self, train, valid=None, recipe: dict | None = None, out_dir: str | os.PathLike | None = None) -> dict:
        """Train on a ClipSet (``valid`` for early stopping); returns a history dict."""

    @abc.abstractmethod
    def predict_proba(self, waveforms: np.ndarray) -> np.ndarray:
        """P(asthma) per clip for float32 ``[N, S]`` waveforms at ``sample_rate``."""

    # -- saving and loading ---------------------------------------------------
    @abc.abstractmethod
    def _save_weights(self, directory: Path) -> None:
        """Write the weights (safetensors) and the model's own config into ``directory``."""

    @classmethod
    @abc.abstractmethod
    def _load_weights(cls, directory: Path, metadata: dict) -> "Classifier":
        """Build the model from ``directory`` (written by ``_save_weights``)."""

    def steth_metadata(self) -> dict:
        from steth_hub import __version__

        meta = dict(self.metadata)
        meta.update({
            "plugin": self.plugin_name,
            "threshold": self.threshold,
            "sample_rate": self.sample_rate,
            "preset": self.preset,
            "labels": list(LABELS),
            "steth_hub_version": __version__,
        })
        facts = self.card_facts()
        if facts:  # the card is rendered from steth.json alone, so the classifier's own facts go there
            meta["card_facts"] = facts
        if not meta.get("distribution"):  # lets a loader without the plugin say what to install
            from steth_hub.hub import plugin_distribution

            dist = plugin_distribution(self.plugin_name)
            if dist:
                meta["distribution"] = dist
        return meta

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Save weights, configs and ``steth.json`` into ``directory`` (atomically)."""
        from steth_hub.fileio import atomic_directory, atomic_write_json

        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            self._save_weights(tmp)
            atomic_write_json(tmp / STETH_METADATA, self.steth_metadata())
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "Classifier":
        """Load a folder written by ``save_pretrained`` (safetensors only)."""
        directory = Path(directory)
        meta = read_metadata(directory)
        check_safetensors_only(directory)
        model = cls._load_weights(directory, meta)
        model.threshold = float(meta.get("threshold", model.threshold))
        model.preset = dict(meta.get("preset") or model.preset)
        model.sample_rate = int(meta.get("sample_rate", model.sample_rate))
        model.metadata = {k: v for k, v in meta.items()
                          if k not in {"plugin", "threshold", "preset", "sample_rate", "labels"}}
        return model

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Publish this model (weights, configs, generated card) in one commit; see steth_hub.hub.push_to_hub."""
        from steth_hub.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    # -- what the core asks every classifier (optional; see CONTRIBUTING.md) ------
    #: the explainer used when none is named (``None``: the first compatible one)
    default_explainer: ClassVar[str | None] = None
    #: axes of a batch of network inputs that are time and frequency (torch classifiers set this)
    feature_axes: ClassVar[dict | None] = None

    def input_grid(self, n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
        """``(centre Hz of each frequency row, centre s of each time column)`` of the network input.

        Explainers return maps on this grid; :mod:`steth_hub.explanation` places them on the
        spectrogram. A classifier without a time x frequency input leaves it unimplemented, and
        input-attribution explainers then say they cannot explain it.
        """
        raise NotImplementedError

    def band_hz(self) -> tuple[float, float] | None:
        """The band of the clips the model reads, in Hz (``None``: up to half the clips' rate).

        A recording whose sample rate leaves part of this band empty gets a warning when screened.
        """
        return None

    def card_facts(self) -> dict:
        """What a model card says the model is: ``architecture``, ``parameters``, ``front_end``,
        ``front_end_rate``, ``pretraining``, ``attribution`` (any subset; unknown keys are shown as they are)."""
        return {}

    # -- decisions --------------------------------------------------------------
    def decide(self, probabilities) -> np.ndarray:
        """True where P(asthma) is at or above the model's threshold."""
        return np.asarray(probabilities) >= self.threshold

    def __repr__(self) -> str:
        return f"{type(self).__name__}(plugin={self.plugin_name!r}, threshold={self.threshold:.3f})"


def read_metadata(directory: str | os.PathLike) -> dict:
    """``steth.json`` of a model folder, with errors that say what is wrong."""
    directory = Path(directory)
    path = directory / STETH_METADATA
    if not directory.is_dir():
        raise ModelError("model folder not found", path=directory,
                         fix="pass a folder written by save_pretrained, or a Hub repo id")
    if not path.is_file():
        raise ModelError(f"no {STETH_METADATA} in the model folder", path=directory,
                         fix="save the model with steth-hub's save_pretrained (a plain transformers "
                             "checkpoint lacks the threshold and preprocessing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{STETH_METADATA} is not valid JSON ({exc})", path=path,
                         fix="re-save the model") from exc
    if not isinstance(meta, dict) or not meta.get("plugin"):
        raise ModelError(f"{STETH_METADATA} does not name the classifier plugin", path=path,
                         fix="re-save the model with steth-hub")
    validate_metadata(meta, path)
    return meta


def _is_number(value) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


#: steth.json, field by field: (required, check, what it must be, how to fix it).
#: The decision, the preprocessing and the label order all come from this file, so a wrong value
#: would give silently wrong answers; every field is checked when a model is loaded.
METADATA_SCHEMA = {
    "plugin": (True, lambda v: isinstance(v, str) and v.strip() != "",
               "the classifier plugin's name (a string)", "re-save the model with steth-hub"),
    "threshold": (True, lambda v: _is_number(v) and 0.0 <= float(v) <= 1.0,
                  "a finite number in [0, 1] (the decision threshold on P(asthma))",
                  "set it to the threshold the model was validated with (steth train writes it), e.g. 0.5"),
    "sample_rate": (True, lambda v: _is_number(v) and float(v) == int(v) and 1000 <= int(v) <= 384000,
                    "a whole number of Hz between 1000 and 384000 (the rate the model's clips have)",
                    "set it to the rate the model was trained at (e.g. 4000 or 16000), or re-save the model"),
    "preset": (False, lambda v: isinstance(v, dict), "a mapping (the preprocessing preset)",
               "re-save the model, or set it to the preset's YAML as a JSON object"),
    "labels": (False, lambda v: isinstance(v, list) and [str(x) for x in v] == list(LABELS),
               f"exactly {list(LABELS)} (label 1 is asthma)",
               "steth-hub models have label 1 = asthma; re-save the model so its outputs follow that order"),
    "distribution": (False, lambda v: isinstance(v, str), "a string (the distribution providing the plugin)",
                     "remove it or set the plugin's distribution name"),
    "name": (False, lambda v: isinstance(v, str), "a string", "remove it or give the model's name"),
    "steth_hub_version": (False, lambda v: isinstance(v, str), "a string", "remove it or re-save the model"),
    "training": (False, lambda v: isinstance(v, dict), "a mapping", "remove it or re-save the model"),
    "evaluation": (False, lambda v: isinstance(v, dict), "a mapping (a steth evaluate report)",
                   "remove it, or re-train with --evaluation"),
}


def validate_metadata(meta: dict, path: str | os.PathLike | None = None) -> dict:
    """Check ``steth.json`` against :data:`METADATA_SCHEMA`; every problem names the field and the fix."""
    problems, fixes = [], []
    for key, (required, check, what, fix) in METADATA_SCHEMA.items():
        if key not in meta or meta[key] is None:
            if required:
                problems.append(f"{key!r} is missing (must be {what})")
                fixes.append(fix)
            continue
        try:
            ok = bool(check(meta[key]))
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            problems.append(f"{key!r} is {meta[key]!r:.60} (must be {what})")
            fixes.append(fix)
    if problems:
        raise ModelError(f"{STETH_METADATA} is invalid: " + "; ".join(problems), path=path,
                         fix="; ".join(dict.fromkeys(fixes)), code="model-metadata")
    return meta


def check_loading_info(directory: str | os.PathLike, info: dict) -> None:
    """Strict loading for ``from_pretrained(..., output_loading_info=True)``: a missing, unexpected or
    mis-shaped tensor is an error naming the folder and the tensors (never a random re-initialisation)."""
    parts = []
    for key, label in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                       ("mismatched_keys", "mis-shaped")):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in (info or {}).get(key) or [])
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{len(names)} {label} tensor(s): {shown}")
    if parts:
        raise ModelError("the weights do not match the model's configuration: " + "; ".join(parts), path=directory,
                         fix="the weight file is damaged or belongs to another configuration: re-download or "
                             "re-save the model (save_pretrained writes matching weights and config)",
                         code="model-weights")


def check_safetensors_file(path: str | os.PathLike) -> None:
    """A ``.safetensors`` file that is whole: a readable header and tensors that fit in the file.

    A truncated, empty, random or renamed-pickle file is a one-line :class:`ModelError` with the
    path and the fix (reads the header only, never the tensors)."""
    import struct

    path = Path(path)
    fix = ("re-download the model or re-save it with save_pretrained; if it came from elsewhere, convert "
           "trusted weights with safetensors.torch.save_file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if size == 0:
                raise ModelError("weight file is empty (0 bytes)", path=path, fix=fix, code="model-weights")
            pickled = (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) \
                or head[:4] == b"PK\x03\x04"
            pickle_error = ModelError("weight file is a pickle/zip (torch.save) file renamed to .safetensors; "
                                      "pickle can run arbitrary code and is refused", path=path, fix=fix,
                                      code="model-weights")
            if len(head) < 8:
                raise ModelError("not a safetensors file (shorter than its 8-byte header length)", path=path,
                                 fix=fix, code="model-weights")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > min(size - 8, 100 * 2**20):
                if pickled:
                    raise pickle_error
                raise ModelError(f"not a safetensors file, or truncated (header length {n} for a {size}-byte "
                                 "file)", path=path, fix=fix, code="model-weights")
            try:
                header = json.loads(fh.read(n).decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                if pickled:
                    raise pickle_error from None
                raise
    except OSError as exc:
        raise ModelError(f"cannot read the weight file ({exc.strerror or exc})", path=path, fix=fix,
                         code="model-weights") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError("not a safetensors file (its header is not JSON)", path=path, fix=fix,
                         code="model-weights") from exc
    if not isinstance(header, dict):
        raise ModelError("not a safetensors file (its header is not a JSON object)", path=path, fix=fix,
                         code="model-weights")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = (int(x) for x in entry["data_offsets"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ModelError(f"safetensors header entry {name!r} is malformed", path=path, fix=fix,
                             code="model-weights") from exc
        end = max(end, stop)
        if start < 0 or stop < start:
            raise ModelError(f"safetensors header entry {name!r} has bad offsets", path=path, fix=fix,
                             code="model-weights")
    if 8 + n + end > size:
        raise ModelError(f"weight file is truncated: its tensors need {8 + n + end} bytes, the file has {size}",
                         path=path, fix=fix, code="model-weights")


def check_safetensors_only(directory: str | os.PathLike) -> None:
    """Refuse folders whose weights are pickle files (``.bin``, ``.pt``...): they can run code."""
    directory = Path(directory)
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise ModelError(
            f"refusing pickle weight file(s) {', '.join(pickles)}: loading pickle can run arbitrary code",
            path=directory,
            fix="convert the weights to safetensors (safetensors.torch.save_file) and remove the pickle files",
        )
    for weights in sorted(directory.glob("*.safetensors")):  # damaged files: one line, not a raw traceback
        check_safetensors_file(weights)


def load_classifier(directory: str | os.PathLike) -> Classifier:
    """Load any saved classifier: ``steth.json`` names the plugin, the registry finds its class."""
    from steth_hub.errors import StethError, UnknownPluginError
    from steth_hub.registry import get_registry

    directory = Path(directory)
    meta = read_metadata(directory)
    check_safetensors_only(directory)
    plugin = meta["plugin"]
    try:
        spec = get_registry().get("classifier", plugin)
    except UnknownPluginError as exc:
        dist = meta.get("distribution")
        if isinstance(dist, str) and _DISTRIBUTION_NAME.fullmatch(dist):
            fix = f"pip install {dist}"
        else:  # never echo an arbitrary string from a downloaded file into a command to run
            fix = f"install the distribution that provides classifier plugin {plugin!r} (see the model's card)"
        raise ModelError(f"this model needs classifier plugin {plugin!r}, which is not installed", path=directory,
                         fix=fix) from exc
    cls: Any = spec.load()
    try:
        model = cls.from_pretrained(directory)
    except StethError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as exc:  # the weights/config do not fit
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelError(f"cannot load the model's weights ({type(exc).__name__}: {first})", path=directory,
                         fix="the folder is damaged or its weights belong to another configuration: re-download "
                             "or re-save the model", code="model-weights") from exc
    self_check(model, directory)
    return model


def self_check(model: "Classifier", directory: str | os.PathLike) -> None:
    """Score one clip of seeded quiet noise right after loading: a model whose configuration does not
    fit its weights or front end (a missing plugin block, a wrong rate) fails here, blamed on the model
    folder, not later on a user's recording."""
    from steth_hub.errors import StethError

    seconds = float((model.preset or {}).get("clip_seconds") or 5.0)
    rate = int(model.sample_rate)
    noise = np.random.default_rng(0).standard_normal((1, max(1, int(round(seconds * rate))))).astype(np.float32)
    try:
        p = np.asarray(model.predict_proba(0.01 * noise), dtype=np.float64)
    except StethError as exc:
        raise ModelError(f"the model cannot score a {seconds:g} s clip at {rate} Hz: {exc.message}", path=directory,
                         fix=exc.fix or "re-save the model", code="model-config") from exc
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelError(f"the model's configuration is inconsistent: it cannot score a {seconds:g} s clip at "
                         f"{rate} Hz ({type(exc).__name__}: {first})", path=directory,
                         fix="the model folder is damaged (steth.json, config or weights do not fit together): "
                             "re-download or re-save it", code="model-config") from exc
    if p.shape != (1,) or not np.isfinite(p).all() or not (0.0 <= float(p[0]) <= 1.0):
        raise ModelError(f"the model returns {p.tolist()!r:.80} for one clip, not one probability in [0, 1]",
                         path=directory, fix="the weights are damaged (NaN?) or the plugin is broken: re-save the model",
                         code="model-config")


#: a distribution name as PEP 508 allows it (letters, digits, ., _, -; starting and ending alphanumeric)
_DISTRIBUTION_NAME = __import__("re").compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")
