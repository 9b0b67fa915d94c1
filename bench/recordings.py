"""Where the benchmarks find real recordings: the shared data, else the examples shipped with the package."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def recording_files(pattern: str = "*/*.wav") -> tuple[list[Path], str]:
    """``(sorted files, where they came from)``: ``pattern`` under the shared recordings
    (``$STETH_HUB_SHARED_DATA`` or ``../shared/data/lung-sounds``); the shipped examples with a note when
    none is there."""
    shared = Path(os.environ.get("STETH_HUB_SHARED_DATA") or REPO.parent / "shared" / "data" / "lung-sounds")
    files = sorted(shared.glob(pattern))
    if files:
        return files, f"shared recordings ({shared})"
    return (sorted((REPO / "steth_hub" / "examples").glob("*/*.wav")),
            "NOTE: shared recordings not found; using the shipped examples")
