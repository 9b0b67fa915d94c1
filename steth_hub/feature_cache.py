"""The in-memory feature cache: a clip is featurised once per process, however often it is seen.

Cross-validation featurises every clip once instead of once per fold and per prediction;
training (:mod:`steth_hub.train`) and prediction (:mod:`steth_hub.torch_classifier`) share it.
Screening turns it off (:func:`feature_cache_disabled`): each recording is seen once, memory stays flat.
"""

from __future__ import annotations

import contextlib

import numpy as np


def featurise_clipset(classifier, clips, batch_size: int = 64):
    """Raw features of every clip of a ClipSet, batch by batch, as one CPU tensor (cached per clip)."""
    import torch

    parts = []
    for start in range(0, len(clips), batch_size):
        parts.append(cached_features(classifier, clips.waveforms[start:start + batch_size], clips.sample_rate))
    return torch.cat(parts)


#: raw features of clips seen in this process: (featuriser signature, clip hash) -> CPU tensor.
#: Cross-validation featurises every clip once instead of once per fold and per prediction.
_FEATURE_CACHE: dict = {}


_FEATURE_CACHE_BYTES = [0]


_FEATURE_CACHE_ON = [True]


FEATURE_CACHE_LIMIT = 2 * 1024**3


@contextlib.contextmanager
def feature_cache_disabled():
    """Featurise without the per-clip cache (screening: each recording is seen once, memory stays flat)."""
    previous = _FEATURE_CACHE_ON[0]
    _FEATURE_CACHE_ON[0] = False
    try:
        yield
    finally:
        _FEATURE_CACHE_ON[0] = previous


def clear_feature_cache() -> None:
    """Forget every cached feature (benchmarks, or to free memory)."""
    _FEATURE_CACHE.clear()
    _FEATURE_CACHE_BYTES[0] = 0


def cached_features(classifier, waveforms, sample_rate: int):
    """``classifier.featurise`` with a per-clip memory cache keyed by the featuriser's settings and the samples."""
    import hashlib

    import torch

    waveforms = np.ascontiguousarray(waveforms, dtype=np.float32)
    if not _FEATURE_CACHE_ON[0]:
        return classifier.featurise(waveforms, sample_rate).float().cpu()
    signature = repr(classifier.feature_signature(int(sample_rate), waveforms.shape[-1]))
    keys = [(signature, hashlib.sha1(w.tobytes()).hexdigest()) for w in waveforms]
    missing = [i for i, k in enumerate(keys) if k not in _FEATURE_CACHE]
    if missing:
        fresh = classifier.featurise(waveforms[missing], sample_rate).float().cpu()
        if _FEATURE_CACHE_BYTES[0] + fresh.numel() * 4 > FEATURE_CACHE_LIMIT:
            clear_feature_cache()
        for j, i in enumerate(missing):
            _FEATURE_CACHE[keys[i]] = fresh[j].clone()
        _FEATURE_CACHE_BYTES[0] += fresh.numel() * 4
        got = {i: fresh[j] for j, i in enumerate(missing)}
    else:
        got = {}
    return torch.stack([got[i] if i in got else _FEATURE_CACHE[k] for i, k in enumerate(keys)])
