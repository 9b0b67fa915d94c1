"""Where a torch classifier becomes an ONNX file: ``model.onnx`` beside its safetensors.

The light screening runtime (:mod:`steth_hub.runtime`) screens with ONNX Runtime and a numpy
front end, without torch. A classifier opts in by implementing::

    onnx_frontend() -> {"name": <feature-extractor plugin>, "config": {...}} | None

naming a registered feature extractor whose factory needs only numpy/scipy/soxr and returns,
as numpy float32, exactly what the classifier's ``featurise()`` returns. :func:`export_onnx`
(what ``TorchClassifier.export_onnx(directory)`` calls) then

1. wraps the network as ``features -> logits(net, normalise(features))``: the input is the RAW
   front-end features of a batch of clips (normalisation is inside the graph), the output the
   logits ``[N, 2]``, the batch axis dynamic;
2. exports it with torch's TorchScript ONNX exporter (``dynamo=False``: it needs only the
   ``onnx`` package, where the dynamo exporter also needs ``onnxscript``);
3. measures, on real clips (the shipped example recordings cut by the model's own preset), the
   largest difference between P(asthma) from the torch path (``predict_proba``) and from the
   numpy front end + ONNX Runtime, and refuses the export (writing nothing) above ``tolerance``;
4. writes ``model.onnx`` atomically and returns the block that :func:`record_export` stores in
   ``steth.json`` under ``"onnx"``: ``file``, ``opset``, ``frontend``, ``tolerance``,
   ``max_abs_diff`` (P(asthma)), and what it was measured on, plus the SHA-256 of the weights it
   was exported from (the runtime refuses an export whose weights have changed since).

``steth export MODEL`` (:mod:`steth_hub.commands.export`) and ``steth train`` (for classifiers
that opt in) call :func:`export_folder`. Importing this module imports neither torch nor onnx.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from steth_hub.errors import ModelError, StethError
# what the light runtime reads is defined there; the export writes exactly that
from steth_hub.runtime import (  # noqa: F401
    ONNX_FILE, ONNX_KEY, build_frontend, softmax_asthma, weights_digest,
)

log = logging.getLogger(__name__)

#: opset of the exported graph (onnxruntime >= 1.14 runs it)
DEFAULT_OPSET = 17
#: the largest difference in P(asthma) per clip between the torch path and the ONNX path that an export accepts
DEFAULT_TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "features", "logits"


def frontend_spec(classifier) -> dict | None:
    """The classifier's ``onnx_frontend()`` checked (``{"name", "config"}``), or None when it does not opt in."""
    method = getattr(classifier, "onnx_frontend", None)
    spec = method() if callable(method) else None
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("config", {}), dict):
        raise ModelError(f"{type(classifier).__name__}.onnx_frontend() returned {spec!r}",
                         fix='return {"name": <feature-extractor plugin>, "config": {...}} or None')
    return {"name": spec["name"], "config": json.loads(json.dumps(spec.get("config") or {}))}


def examples_dir() -> Path:
    """The example recordings shipped inside the package."""
    return Path(__file__).resolve().parent / "examples"


def reference_waveforms(classifier) -> tuple[np.ndarray, str]:
    """Real clips to measure an export on: the shipped examples cut by the model's own preset."""
    from steth_hub.screening import ScreeningPipeline, to_recording

    pipeline = ScreeningPipeline(classifier)
    clips, files = [], 0
    for path in sorted(examples_dir().glob("*/*.wav")):
        try:
            got, _ = pipeline.clips(to_recording(path, None), str(path))
        except StethError:
            continue
        files += 1
        clips += [c.samples for c in got]
    if not clips:
        raise ModelError("none of the shipped example recordings gives a clip with this model's preset",
                         path=examples_dir(), fix="pass waveforms= (real clips at the model's sample rate)")
    return np.stack(clips).astype(np.float32), f"{len(clips)} clips of the {files} shipped example recordings"


def _graph(classifier):
    """``features -> logits(net, normalise(features))`` as one torch module, on the CPU, in eval mode."""
    import copy

    import torch

    net = classifier.torch_module()
    if net is None:
        raise ModelError("nothing to export: the classifier has no network", fix="train or load the model first")
    if any(p.device.type != "cpu" for p in net.parameters()):
        net = copy.deepcopy(net).cpu()

    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, features):
            return classifier.logits(self.net, classifier.normalise(features)).float()

    return Exported().eval()


def export_onnx(classifier, directory: str | os.PathLike, *, waveforms: np.ndarray | None = None,
                opset: int = DEFAULT_OPSET, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Export ``classifier`` to ``directory/model.onnx`` and return the ``"onnx"`` block for ``steth.json``.

    Args:
        classifier: a trained torch classifier that implements ``onnx_frontend()``.
        directory: its model folder (the weights' digest is taken from the ``*.safetensors`` there).
        waveforms: real clips ``[N, S]`` at the classifier's sample rate to measure the export on
            (default: the shipped examples, cut by the model's preset).
        opset: ONNX opset.
        tolerance: the largest accepted difference in P(asthma) between the torch and ONNX paths.

    Raises:
        ModelError: the classifier does not opt in, the export fails, or the ONNX path differs from
            the torch path by more than ``tolerance`` (then nothing is written).
    """
    spec = frontend_spec(classifier)
    if spec is None:
        raise ModelError(f"the {classifier.plugin_name} classifier has no ONNX export (no onnx_frontend())",
                         fix="screen it with the torch runtime (pip install 'steth-hub[train]'), or implement "
                             "onnx_frontend() in its plugin (docs/plugins.md)")
    try:
        import onnxruntime as ort
        import torch
    except ImportError as exc:
        raise ModelError(f"exporting to ONNX needs torch and onnxruntime ({exc})",
                         fix="pip install 'steth-hub[train]'") from exc
    from steth_hub.feature_cache import feature_cache_disabled

    directory = Path(directory)
    measured_on = "the given clips"
    if waveforms is None:
        waveforms, measured_on = reference_waveforms(classifier)
    waveforms = np.asarray(waveforms, dtype=np.float32)
    rate = int(classifier.sample_rate)
    frontend = build_frontend(spec)

    with feature_cache_disabled():
        torch_features = classifier.featurise(waveforms, rate).float().cpu()
        torch_probs = np.asarray(classifier.predict_proba(waveforms), dtype=np.float32)
    numpy_features = np.asarray(frontend(waveforms, rate), dtype=np.float32)
    if numpy_features.shape != tuple(torch_features.shape):
        raise ModelError(f"front end {spec['name']} gives {numpy_features.shape}, featurise() gives "
                         f"{tuple(torch_features.shape)}", fix="make onnx_frontend() name the settings featurise uses")
    frontend_diff = float(np.abs(numpy_features - torch_features.numpy()).max()) if numpy_features.size else 0.0

    graph = _graph(classifier)
    buffer = io.BytesIO()
    example = torch.from_numpy(numpy_features[: min(2, len(numpy_features))])
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
            torch.onnx.export(graph, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              opset_version=int(opset), do_constant_folding=True, dynamo=False)
    except Exception as exc:  # the exporter raises many types; say which model failed and why
        raise ModelError(f"torch.onnx.export failed for the {classifier.plugin_name} classifier: "
                         f"{type(exc).__name__}: {exc}", fix="report this with the model folder") from exc
    data = buffer.getvalue()

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    logits = session.run([OUTPUT_NAME], {INPUT_NAME: numpy_features})[0]
    onnx_probs = softmax_asthma(logits)
    diff = float(np.abs(onnx_probs - torch_probs).max()) if len(onnx_probs) else 0.0
    if not np.isfinite(diff) or diff > tolerance:
        raise ModelError(f"the ONNX path differs from the torch path by {diff:.3g} in P(asthma) on {measured_on} "
                         f"(tolerance {tolerance:g}; the front ends differ by {frontend_diff:.3g})",
                         path=directory, fix="check that onnx_frontend() reproduces featurise() exactly")
    threshold = float(classifier.threshold)
    agree = int(((onnx_probs >= threshold) == (torch_probs >= threshold)).sum())

    from steth_hub.fileio import atomic_write_bytes

    try:
        atomic_write_bytes(directory / ONNX_FILE, data)
    except OSError as exc:
        raise ModelError(f"cannot write {ONNX_FILE}: {exc}", path=directory,
                         fix="copy the model folder somewhere writable and export that copy") from exc
    band = classifier.band_hz() if callable(getattr(classifier, "band_hz", None)) else None
    return {
        "file": ONNX_FILE,
        "opset": int(opset),
        "frontend": spec,
        "tolerance": float(tolerance),
        "max_abs_diff": diff,
        "frontend_max_abs_diff": frontend_diff,
        "measured_on": measured_on,
        "n_clips": int(len(waveforms)),
        "clip_decisions_agree": f"{agree}/{len(waveforms)}",
        "input": {"name": INPUT_NAME, "shape": ["batch", *map(int, numpy_features.shape[1:])], "raw_features": True},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", 2]},
        "sha256": hashlib.sha256(data).hexdigest(),
        "weights": weights_digest(directory),
        "exporter": f"torch.onnx (TorchScript exporter), torch {torch.__version__}",
        "checked_with": f"onnxruntime {ort.__version__}",
        "band_hz": [float(band[0]), float(band[1])] if band else None,  # for the low-sample-rate warning
    }


def record_export(directory: str | os.PathLike, block: dict) -> None:
    """Store the export block in ``directory/steth.json`` under ``"onnx"`` (atomically)."""
    from steth_hub.classifier import STETH_METADATA, read_metadata
    from steth_hub.fileio import atomic_write_json

    meta = read_metadata(directory)
    meta[ONNX_KEY] = block
    try:
        atomic_write_json(Path(directory) / STETH_METADATA, meta)
    except OSError as exc:
        raise ModelError(f"cannot update {STETH_METADATA}: {exc}", path=directory,
                         fix="copy the model folder somewhere writable and export that copy") from exc


def export_folder(directory: str | os.PathLike, model=None, **kwargs) -> dict:
    """Export the model saved in ``directory`` (loaded with torch unless given) and record it in its steth.json."""
    from steth_hub.classifier import load_classifier

    directory = Path(directory)
    if model is None:
        model = load_classifier(directory)
    exporter = getattr(model, "export_onnx", None)
    if not callable(exporter):
        raise ModelError(f"the {model.plugin_name} classifier cannot be exported to ONNX (it is not a torch model)",
                         path=directory, fix="screen it with the torch runtime")
    block = exporter(directory, **kwargs)
    record_export(directory, block)
    return block


def export_after_training(model, directory: str | os.PathLike) -> dict | None:
    """``steth train``'s last step: export a classifier that opts in; a failure is a warning (the model is saved)."""
    try:
        if frontend_spec(model) is None:
            return None
        block = export_folder(directory, model)
    except (StethError, ImportError) as exc:
        log.warning("the model in %s was saved but not exported to ONNX (%s); screening it uses torch. "
                    "Run `steth export %s` to retry.", directory, exc, directory)
        return None
    log.info("exported %s/%s (P(asthma) within %.2g of torch)", directory, ONNX_FILE, block["max_abs_diff"])
    return block
