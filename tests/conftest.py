"""Shared fixtures. The environment is made offline before anything imports the Hub client."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# huggingface_hub reads these once, at import: set them before any test imports it.
_HF_HOME = tempfile.mkdtemp(prefix="steth-hf-home-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "steth_hub" / "examples"
TEST_DATA = Path(__file__).resolve().parent / "data"


def _shared_root() -> Path:
    env = os.environ.get("STETH_HUB_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "lung-sounds"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data/lung-sounds (or $STETH_HUB_SHARED_DATA); skips with a reason when absent."""
    root = _shared_root()
    if not (root / "kauh").is_dir():
        pytest.skip(f"needs the shared lung-sound recordings at {root} "
                    "(set STETH_HUB_SHARED_DATA to their folder to run this test)")
    return root


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The real recordings shipped with the package (steth_hub/examples)."""
    return EXAMPLES


@pytest.fixture(scope="session")
def example_wavs() -> list[Path]:
    return sorted(EXAMPLES.glob("*/*.wav"))


@pytest.fixture(scope="session")
def example_clipset():
    """The shipped examples cut by the default preset, labelled from the diagnosis in their file
    names (never the sound-type annotation); the clipped ICBHI example is left out as a corpus would."""
    from steth_hub.clips import ClipSet
    from steth_hub.errors import RecordingRejected
    from steth_hub.preprocess import Preprocessor

    pre, sets = Preprocessor("excerpt-10s"), []
    for path in sorted(EXAMPLES.glob("*/*.wav")):
        try:
            clips = pre.run(path, path.stem)
        except RecordingRejected:
            continue
        label = 1 if "asthma" in path.name.split(",")[0].lower() else 0
        sets.append(ClipSet.from_clips(clips, [label] * len(clips), [path.stem.split("_")[0]] * len(clips)))
    return ClipSet.concatenate(sets)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train and run several times faster on one torch thread than on two shared, busy
    cores (bench/README.md). Modules with tiny models use it: ``pytestmark = usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache folder for this test (offline)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Each test sees the plugins installed now, not a registry cached by an earlier test."""
    from steth_hub.registry import reset_registry

    reset_registry()
    yield
    reset_registry()


def pytest_collection_modifyitems(config, items):
    """Every test that uses the shared recordings, directly or through another fixture, carries the
    ``shared_data`` marker, so ``-m shared_data`` (and ``-m "not shared_data"``) select all of them."""
    marker = pytest.mark.shared_data
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()) and item.get_closest_marker("shared_data") is None:
            item.add_marker(marker)
