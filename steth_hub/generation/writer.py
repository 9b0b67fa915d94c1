"""Where synthetic clips land: WAV files plus one JSON sidecar, written as one folder, atomically.

``OUT/`` holds ``clip-000.wav``, ``clip-001.wav``... (16-bit PCM at the generator's rate) and
``generation.json``: the prompt, the conditions read from it, the seed, the model, the sampler
settings and, per clip, its file, its own seed and (with ``--check``) the classifier's P(asthma)
and whether it was kept. Clips rejected by ``--check`` go to ``OUT/rejected/``. The folder
appears whole or not at all (:func:`steth_hub.fileio.atomic_directory`); an existing folder is
replaced only when it is an earlier ``steth generate`` output or with ``--overwrite``.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from steth_hub.errors import ConfigError

SIDECAR = "generation.json"
FORMAT = "steth-generation/1"
REJECTED = "rejected"


def check_seconds(seconds, low: float, high: float, name: str) -> float:
    """``seconds`` as a float within ``[low, high]``; otherwise a one-line error naming the generator's range."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise ConfigError(f"--seconds {seconds!r} is not a number", fix=f"give seconds between {low:g} and {high:g}") \
            from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"--seconds {seconds!r} is outside what generator {name!r} draws ({low:g}-{high:g} s)",
                          fix=f"give seconds between {low:g} and {high:g}")
    return value


def check_output(out, *, inputs=(), overwrite: bool = False) -> Path:
    """The ``--out`` rule of every steth command: never an input, a non-empty foreign folder only with
    ``--overwrite``; an earlier ``steth generate`` output (it has ``generation.json``) may be replaced."""
    from steth_hub.fileio import check_output_folder

    return check_output_folder(out, inputs, markers=(SIDECAR,), overwrite=overwrite, what="generation")


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), int(sample_rate), format="WAV",
             subtype="PCM_16")
    return buf.getvalue()


def write_generation(out, recordings: Sequence, sidecar: dict, clips: Sequence[dict]) -> Path:
    """Write the clips (``clips[i]["kept"] is False`` -> ``rejected/``) and the sidecar as one folder."""
    from steth_hub.fileio import atomic_directory, atomic_write_bytes, atomic_write_json

    out = Path(out)
    with atomic_directory(out) as tmp:
        for rec, info in zip(recordings, clips):
            rel = Path(info["file"])
            atomic_write_bytes(tmp / rel, wav_bytes(rec.samples, rec.sample_rate))
        atomic_write_json(tmp / SIDECAR, {**sidecar, "format": FORMAT, "clips": list(clips)})
    return out


def clip_file(i: int, kept: bool = True) -> str:
    name = f"clip-{i:03d}.wav"
    return name if kept else f"{REJECTED}/{name}"


def read_sidecar(folder: str | os.PathLike) -> dict:
    import json

    return json.loads((Path(folder) / SIDECAR).read_text(encoding="utf-8"))
