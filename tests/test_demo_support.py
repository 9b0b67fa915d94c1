"""Helpers shared by the demo tests (test_demo*.py, test_browser_demo.py); this module holds no tests.

* :func:`train_tiny_model`: the real ``mfcc-logreg`` classifier plugin, trained on clips the
  default preset cuts from the real example recordings, saved with ``save_pretrained`` (about 5 s);
* :func:`serve`: launch an app on 127.0.0.1 at a free port and always close it;
* :func:`tiled_wav`: a longer (or larger) WAV made of a real recording repeated.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "steth_hub" / "examples"
ASTHMA_WAV = EXAMPLES / "kauh" / "EP38_Asthma,E W,P R M,38,M_middle10sec.wav"
NORMAL_WAV = EXAMPLES / "kauh" / "EP32_N,N,A R L,30,M_middle10sec.wav"
#: a real recording that is neither shipped as an example nor ever uploaded by the tests
NOT_UPLOADED_WAV = REPO / "tests" / "data" / "kauh-conflict" / "BP100_N,N,P R M,70,F_middle10sec.wav"


def train_tiny_model(folder: Path) -> Path:
    """Train the real mfcc-logreg plugin on the example recordings' clips and save it to ``folder``."""
    from steth_hub.clips import ClipSet
    from steth_hub.corpus.kauh import parse_kauh_name
    from steth_hub.preprocess import Preprocessor, load_preset
    from steth_hub.registry import get_registry

    preset = load_preset()
    preprocessor = Preprocessor(preset)
    waves, labels, ids = [], [], []
    for path in sorted(EXAMPLES.glob("kauh/*.wav")):
        meta = parse_kauh_name(path.name)
        for clip in preprocessor.run(path, meta["recording_id"]):
            waves.append(clip.samples)
            labels.append(int("asthma" in meta["diagnosis"].lower()))
            ids.append(meta["recording_id"])
    clips = ClipSet(waveforms=np.stack(waves), sample_rate=preset.sample_rate, labels=np.asarray(labels),
                    recording_ids=np.asarray(ids), patient_ids=np.asarray(ids), starts=np.zeros(len(ids)))
    cls = get_registry().get("classifier", "mfcc-logreg").load()
    model = cls.from_config({"sample_rate": preset.sample_rate})
    model.preset = preset.to_dict()
    model.fit(clips)
    model.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Serve ``app`` (from steth_hub.demo.build_app) on 127.0.0.1; yields its URL; closes it after."""
    from steth_hub.demo import launch

    launch(app, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True, warm_up=False)
    try:
        yield app.local_url
    finally:
        app.close()


def tiled_wav(src: Path, dest: Path, seconds: float) -> Path:
    """``dest``: the real recording ``src`` repeated to last ``seconds`` (same rate and format)."""
    import soundfile as sf

    samples, rate = sf.read(src, dtype="int16")
    n = int(seconds * rate)
    sf.write(dest, np.resize(samples, n), rate, subtype="PCM_16")
    return dest
