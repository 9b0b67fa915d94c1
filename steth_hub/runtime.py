"""The light screening runtime: ONNX Runtime and a numpy front end, no torch.

A model folder exported by ``steth export`` (or by ``steth train`` for a classifier that opts
in) holds ``model.onnx`` beside its safetensors and an ``"onnx"`` block in ``steth.json``
(see :mod:`steth_hub.onnx_export`). :class:`OnnxClassifier` reads the two and screens with
the same interface as a :class:`~steth_hub.classifier.Classifier` (``sample_rate``,
``threshold``, ``preset``, ``metadata``, ``plugin_name``, ``predict_proba``, ``decide``):

    clips [N, S] --front end (numpy, a registered feature extractor)--> raw features
                 --model.onnx (normalisation + network)--> logits [N, 2] --softmax--> P(asthma)

Importing this module, loading a model and screening import numpy, soxr and onnxruntime
only: never torch, transformers or datasets. :func:`steth_hub.screening.load_model` picks this
runtime for folders with an export (``STETH_RUNTIME=torch`` forces the torch path).

ONNX Runtime uses ``STETH_ONNX_THREADS`` threads, else ``OMP_NUM_THREADS``, else its default
(one per physical core), like torch honours ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from steth_hub.errors import ModelError

ONNX_FILE = "model.onnx"
ONNX_KEY = "onnx"
#: names the runtime choice accepts (``load_model(runtime=...)``, ``STETH_RUNTIME``)
RUNTIMES = ("auto", "onnx", "torch")


def onnx_block(directory: str | os.PathLike) -> dict | None:
    """The ``"onnx"`` block of a folder's steth.json when ``model.onnx`` is there too, else None."""
    directory = Path(directory)
    path = directory / "steth.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    block = meta.get(ONNX_KEY) if isinstance(meta, dict) else None
    if not isinstance(block, dict) or not (directory / str(block.get("file") or ONNX_FILE)).is_file():
        return None
    return block


def has_onnx_export(directory: str | os.PathLike) -> bool:
    """Whether a model folder carries an ONNX export the light runtime can read."""
    return onnx_block(directory) is not None


def _threads() -> int:
    for name in ("STETH_ONNX_THREADS", "OMP_NUM_THREADS"):
        try:
            value = int(os.environ.get(name, ""))
        except ValueError:
            continue
        if value > 0:
            return value
    return 0  # onnxruntime's default


class OnnxClassifier:
    """A screening model read from an ONNX export: the Classifier screening interface, without torch.

    Attributes:
        plugin_name: the classifier plugin that trained it (from ``steth.json``).
        sample_rate, threshold, preset: as the torch classifier's.
        metadata: everything else in ``steth.json`` (name, training, evaluation, the onnx block...).
        directory: the model folder.
        front_end_rate: the front end's own sample rate (for the low-sample-rate warning).
    """

    runtime = "onnx"
    #: clips per ONNX Runtime call
    predict_batch_size: int = 32

    def __init__(self, directory: Path, meta: dict, session, frontend, block: dict):
        self.directory = Path(directory)
        self.plugin_name = str(meta["plugin"])
        self.threshold = float(meta.get("threshold", 0.5))
        self.sample_rate = int(meta.get("sample_rate", 16000))
        self.preset = dict(meta.get("preset") or {})
        self.metadata = {k: v for k, v in meta.items()
                         if k not in {"plugin", "threshold", "preset", "sample_rate", "labels"}}
        self.session = session
        self.frontend = frontend
        self.onnx = block
        self._input = session.get_inputs()[0].name
        rate = getattr(frontend, "sample_rate", None)
        self.front_end_rate = int(rate) if isinstance(rate, (int, float)) and rate > 0 else None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None, *,
                        check_weights: bool = True, **kwargs) -> "OnnxClassifier":
        """The light runtime of a model named as everywhere else (a folder, an embedded model, a cached
        Hub repo: :func:`steth_hub.hub.resolve`, which imports no torch); see :meth:`from_folder`."""
        from steth_hub.hub import resolve

        return cls.from_folder(resolve(name_or_path, revision, **kwargs), check_weights=check_weights)

    @classmethod
    def from_folder(cls, directory: str | os.PathLike, *, check_weights: bool = True) -> "OnnxClassifier":
        """Load a folder with ``model.onnx`` and an ``"onnx"`` block in ``steth.json``.

        Raises:
            ModelError: no export, onnxruntime missing, the export was made from other weights
                (``check_weights``), or its front-end plugin is not installed.
        """
        from steth_hub.model_folder import check_safetensors_only, read_metadata

        directory = Path(directory)
        meta = read_metadata(directory)
        check_safetensors_only(directory)
        block = onnx_block(directory)
        if block is None:
            raise ModelError("this model folder has no ONNX export (model.onnx and an onnx block in steth.json)",
                             path=directory, fix=f"run `steth export {directory}` (needs the train extra), "
                                                 "or screen with the torch runtime (STETH_RUNTIME=torch)")
        onnx_path = directory / str(block.get("file") or ONNX_FILE)
        if check_weights:
            _check_export_matches(directory, onnx_path, block)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError("the light runtime needs onnxruntime", path=directory,
                             fix="pip install 'steth-hub[screen]'") from exc
        frontend = _frontend(block, directory)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        threads = _threads()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot load {onnx_path.name}: {type(exc).__name__}: {exc}",
                             path=onnx_path, fix=f"re-export it: steth export {directory}") from exc
        return cls(directory, meta, session, frontend, block)

    # -- the screening interface ------------------------------------------------
    def features(self, waveforms) -> np.ndarray:
        """Raw front-end features of clips ``[N, S]`` at ``sample_rate`` (numpy float32)."""
        return np.ascontiguousarray(np.asarray(self.frontend(waveforms, self.sample_rate), dtype=np.float32))

    def predict_proba(self, waveforms) -> np.ndarray:
        """P(asthma) per clip for float32 ``[N, S]`` waveforms at ``sample_rate``."""
        from steth_hub.clips import clip_batch

        waveforms = clip_batch(waveforms)
        out = []
        for start in range(0, len(waveforms), self.predict_batch_size):
            x = self.features(waveforms[start:start + self.predict_batch_size])
            out.append(softmax_asthma(self.session.run(None, {self._input: x})[0]))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def band_hz(self) -> tuple[float, float] | None:
        """The band of the clips the model reads (recorded at export), else None (up to half the clips' rate)."""
        band = self.onnx.get("band_hz")
        if isinstance(band, (list, tuple)) and len(band) == 2:
            return float(band[0]), float(band[1])
        if self.front_end_rate:
            return 0.0, self.front_end_rate / 2.0
        return None

    def decide(self, probabilities) -> np.ndarray:
        """True where P(asthma) is at or above the model's threshold."""
        return np.asarray(probabilities) >= self.threshold

    def __repr__(self) -> str:
        return f"OnnxClassifier(plugin={self.plugin_name!r}, threshold={self.threshold:.3f}, folder={self.directory})"


def _check_export_matches(directory: Path, onnx_path: Path, block: dict) -> None:
    """Refuse an export whose file or weights changed since it was measured (a stale model.onnx)."""

    expected = block.get("weights")
    if isinstance(expected, dict) and expected and weights_digest(directory) != expected:
        raise ModelError(f"{onnx_path.name} was exported from other weights than the folder's safetensors",
                         path=directory, fix=f"re-export it: steth export {directory}")
    if block.get("sha256") and sha256_file(onnx_path) != block["sha256"]:
        raise ModelError(f"{onnx_path.name} is not the file its steth.json block describes", path=onnx_path,
                         fix=f"re-export it: steth export {directory}")


def _frontend(block: dict, directory: Path) -> Any:
    from steth_hub.errors import StethError

    spec = block.get("frontend")
    if not isinstance(spec, dict) or not spec.get("name"):
        raise ModelError("the onnx block in steth.json names no front end", path=directory,
                         fix=f"re-export it: steth export {directory}")
    try:
        return build_frontend(spec)
    except StethError as exc:
        raise ModelError(f"the ONNX model's front end {spec['name']!r} cannot be built: {exc.message}",
                         path=directory, fix=exc.fix or "install the plugin that provides it") from exc


def build_frontend(spec: dict):
    """The feature extractor a ``{"name", "config"}`` block names, from the plugin registry."""
    from steth_hub.registry import get_registry

    return get_registry().get("feature_extractor", spec["name"]).create(**dict(spec.get("config") or {}))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(directory: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every ``*.safetensors`` file in a model folder."""
    return {p.name: sha256_file(p) for p in sorted(Path(directory).glob("*.safetensors"))}


def softmax_asthma(logits: np.ndarray) -> np.ndarray:
    """P(asthma) from logits ``[N, 2]``, as ``torch.softmax(logits, -1)[:, 1]`` (float32)."""
    z = np.asarray(logits, dtype=np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e[:, 1] / e.sum(axis=-1)).astype(np.float32)
