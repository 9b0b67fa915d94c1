"""Where a third-party PyTorch checkpoint becomes safetensors, once, without running pickle code.

Published audio encoders (EfficientAT's ``mn04_as_mAP_432.pt``...) are distributed as PyTorch
pickles. steth-hub never loads a pickle at run time; :func:`convert_checkpoint` reads one with
``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: tensors and plain containers
only, no code), checks that it is a plain state dict (names -> tensors, optionally under one
``state_dict``/``model`` key), and writes the same tensors and names as safetensors, atomically.
``steth convert FILE.pt OUT.safetensors`` runs it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from steth_hub.errors import ModelError

#: keys under which training scripts commonly nest the state dict
NESTED_KEYS = ("state_dict", "model_state_dict", "model")


def plain_state_dict(obj, path: str | os.PathLike) -> dict:
    """``obj`` as ``{name: tensor}``, or :class:`ModelError` saying what else it holds."""
    import torch

    if isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in NESTED_KEYS:
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict) or not obj:
        raise ModelError(f"the checkpoint holds a {type(obj).__name__}, not a state dict of tensors", path=path,
                         fix="save model.state_dict() (names -> tensors) and convert that")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ModelError(f"the checkpoint is not a plain state dict: {len(bad)} entries are not named tensors: "
                         + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""), path=path,
                         fix="save model.state_dict() alone (no optimiser state, epochs or config objects)")
    return obj


def convert_checkpoint(source: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Convert a PyTorch ``.pt``/``.pth``/``.ckpt`` state dict to safetensors; returns what was written."""
    import torch
    from safetensors.torch import save_file

    source, out = Path(source), Path(out)
    if not source.is_file():
        raise ModelError("checkpoint not found", path=source, fix="give the path of the .pt file")
    if out.suffix != ".safetensors":
        raise ModelError("the output must be a .safetensors file", path=out, fix="name it e.g. model.safetensors")
    if out.exists() and not overwrite:
        raise ModelError("the output exists", path=out, fix="choose another name, or pass --overwrite")
    if out.resolve() == source.resolve():
        raise ModelError("the output would replace the checkpoint", path=out, fix="write to another file")
    try:
        obj = torch.load(str(source), map_location="cpu", weights_only=True)
    except Exception as exc:  # the restricted unpickler refuses code and unknown types; corrupt files fail too
        raise ModelError(f"refusing to read this checkpoint with the safe loader ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})", path=source,
                         fix="only plain state dicts of tensors are converted; never load an untrusted pickle "
                             "with weights_only=False") from exc
    state = plain_state_dict(obj, source)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", "converted_from": source.name, "sha256": digest})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"source": str(source), "out": str(out), "tensors": len(tensors), "sha256": digest,
            "parameters": int(sum(t.numel() for t in tensors.values()))}
