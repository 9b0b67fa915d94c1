"""A saved model folder: the one place that reads and writes ``steth.json``, checks the weights and loads it.

Every saved model folder holds ``steth.json`` (the plugin that reads it, the threshold, the
preprocessing preset, the sample rate, training and evaluation facts) beside safetensors weights.
:func:`read_metadata` reads and validates it against :data:`METADATA_SCHEMA` (errors name the
field and the fix), :func:`write_metadata` writes it, :func:`check_safetensors_only` refuses pickle
files and damaged safetensors before any weight is read, and :func:`load_classifier` loads a folder
with the classifier plugin ``steth.json`` names (the registry finds its class; never an import path
taken from a file), then scores one clip of quiet noise (:func:`self_check`). :mod:`steth_hub.hub`
(resolving a name to a folder), :mod:`steth_hub.card` and :mod:`steth_hub.publish` use these; none of
them reads ``steth.json`` by itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from steth_hub.errors import ModelError

#: label names, index = class id
LABELS: tuple[str, str] = ("not_asthma", "asthma")
STETH_METADATA = "steth.json"
#: weight files that need pickle to load; refused everywhere
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
#: the only files fetched from, or published to, the Hub
#: (``*.onnx``: the light runtime's export, protobuf data that ONNX Runtime reads without running code)
SAFE_PATTERNS: tuple[str, ...] = ("*.json", "*.safetensors", "*.md", "*.txt", "*.yaml", "*.onnx")
#: code files, fetched only with ``trust_remote_code=True`` and a pinned revision
CODE_PATTERNS: tuple[str, ...] = ("*.py",)


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
    "stability_checks": (False, lambda v: _stability_checks_ok(v),
                         "a list of [kind, value] pairs: [\"noise\", dB below the recording (10-120)] or "
                         "[\"gain\", dB (non-zero, within 24)]",
                         'write e.g. [["noise", 60], ["noise", 40]], or remove it'),
}


def _stability_checks_ok(value) -> bool:
    from steth_hub.errors import StethError
    from steth_hub.stability import check_list

    try:
        check_list(value)
    except StethError:
        return False
    return True


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


def plugin_distribution(plugin: str) -> str | None:
    """The distribution that registers classifier ``plugin`` here (for ``steth.json``'s ``distribution``)."""
    from steth_hub.registry import get_registry

    for reg in get_registry().registrations("classifier"):
        if reg.spec.name == plugin:
            return reg.distribution
    return None


def publishable_metadata(meta: dict) -> dict:
    """``steth.json`` as published: with ``distribution``, so a loader without the plugin can say what to install."""
    meta = dict(meta)
    if not meta.get("distribution") and meta.get("plugin"):
        dist = plugin_distribution(meta["plugin"])
        if dist:
            meta["distribution"] = dist
    return meta


def write_metadata(directory: str | os.PathLike, meta: dict) -> Path:
    """Write ``steth.json`` into ``directory`` atomically."""
    from steth_hub.fileio import atomic_write_json

    path = Path(directory) / STETH_METADATA
    atomic_write_json(path, meta)
    return path


def check_model_weights(folder: str | os.PathLike) -> None:
    """A model folder's weights: no pickle file in it or any subfolder, damaged safetensors named,
    and at least one ``.safetensors`` file."""
    folder = Path(folder)
    for sub in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        check_safetensors_only(sub)
    if not any(folder.rglob("*.safetensors")):
        raise ModelError("no .safetensors weights in the model folder", path=folder,
                         fix="save the model with save_pretrained (safetensors) or pass the right folder")


def load_classifier(directory: str | os.PathLike):
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
        model = cls.from_folder(directory)
    except StethError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as exc:  # the weights/config do not fit
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelError(f"cannot load the model's weights ({type(exc).__name__}: {first})", path=directory,
                         fix="the folder is damaged or its weights belong to another configuration: re-download "
                             "or re-save the model", code="model-weights") from exc
    self_check(model, directory)
    return model


def self_check(model, directory: str | os.PathLike) -> None:
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
