"""Where each classifier's input cells lie in Hz and seconds: the grids explainer maps come on.

An explainer returns maps on the classifier's own input grid; :mod:`steth_hub.explanation` then
needs the centre frequency of every row and the time of every column to place them on the
spectrogram. They follow from the front end's settings, read from the classifier (never
assumed):

Each classifier answers ``input_grid(n_rows, n_cols)`` itself (``steth_hub.classifier.Classifier``);
the helpers below are what the built-in ones use:

* ``ast``: transformers' ``ASTFeatureExtractor`` (Kaldi-style filter banks): ``num_mel_bins``
  triangles evenly spaced on the Kaldi mel scale from 20 Hz to half the front end's sample rate
  (``front_end_rate``: the checkpoint's ``front_end.sampling_rate``, e.g. 4 kHz for the embedded
  model, else the clips' rate); frames of 400 samples every 160 (25 ms every 10 ms at 16 kHz, 100 ms every 40 ms at
  4 kHz), not centred, so frame ``i`` is centred at ``(160 i + 200) / rate``; input
  ``[max_length frames, bins]``;
* ``densenet201``: :class:`steth_hub.features.MultiWindowLogMel`: ``n_mels`` Slaney mel bands from
  ``f_min`` to ``f_max``; centred frames ``hop`` samples apart, frame ``i`` at ``i * hop / rate``;
  input ``[channels, bands, frames]``.
"""

from __future__ import annotations

import numpy as np

from steth_hub.errors import PluginError
from steth_hub.explanation import mel_centres

#: the AST front end's framing in samples (transformers' ASTFeatureExtractor) and its lowest mel frequency
AST_FRAME_LENGTH = 400
AST_HOP_LENGTH = 160
AST_MEL_MIN_HZ = 20.0


def is_ast(net) -> bool:
    return hasattr(net, "audio_spectrogram_transformer") and hasattr(net, "config")


def ast_grid(classifier, config) -> tuple[np.ndarray, np.ndarray]:
    """``(centre Hz of each mel bin, centre s of each frame)`` of the AST input ``[max_length, num_mel_bins]``."""
    # the front end's own rate (a checkpoint's preprocessor_config.json), which may differ from the clips'
    rate = int(getattr(classifier, "front_end_rate", None) or classifier.sample_rate)
    frequencies = mel_centres(int(config.num_mel_bins), AST_MEL_MIN_HZ, rate // 2, "kaldi")
    times = (np.arange(int(config.max_length)) * AST_HOP_LENGTH + AST_FRAME_LENGTH / 2.0) / rate
    return frequencies, times


def logmel_grid(classifier, n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centre Hz of each band, centre s of each frame)`` of a multi-window log-mel input."""
    get = getattr(classifier, "extractor", None)
    extractor = get() if callable(get) else None
    needed = ("n_mels", "f_min", "f_max", "hop", "sample_rate")
    if extractor is None or not all(hasattr(extractor, k) for k in needed):
        raise PluginError(f"classifier {getattr(classifier, 'plugin_name', '?')!r} does not say which frequencies "
                          "and times its features hold", fix="use MultiWindowLogMel features (steth_hub.features)")
    if int(extractor.n_mels) != n_rows:
        raise PluginError(f"features have {n_rows} rows but the extractor {extractor.n_mels} mel bands",
                          fix="check the classifier's feature settings")
    frequencies = mel_centres(int(extractor.n_mels), float(extractor.f_min), float(extractor.f_max), "slaney")
    times = np.arange(n_cols) * extractor.hop / float(extractor.sample_rate)
    return frequencies, times


def to_input_grid(classifier, net, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell values shaped like the network input -> ``(maps [N, F, T], frequencies, times)``.

    Generic over classifiers: ``classifier.feature_axes`` says which input axes are time and
    frequency, every other axis (the channels of an image input: three windows, or one) is summed,
    and ``classifier.input_grid(F, T)`` says where the rows and columns lie in Hz and seconds.
    """
    values = np.asarray(values, dtype=np.float32)
    axes = getattr(classifier, "feature_axes", None)
    if not isinstance(axes, dict) or "time" not in axes or "freq" not in axes or values.ndim < 3:
        raise PluginError(f"classifier {getattr(classifier, 'plugin_name', '?')!r} does not say which input axes are "
                          "time and frequency", fix="set feature_axes = {'time': i, 'freq': j} on the classifier")
    time_axis, freq_axis = axes["time"] % values.ndim, axes["freq"] % values.ndim
    others = tuple(a for a in range(1, values.ndim) if a not in (time_axis, freq_axis))
    maps = np.moveaxis(values, (freq_axis, time_axis), (-2, -1))
    if others:
        maps = maps.reshape(maps.shape[0], -1, maps.shape[-2], maps.shape[-1]).sum(axis=1)
    try:
        frequencies, times = classifier.input_grid(maps.shape[1], maps.shape[2])
    except NotImplementedError as exc:
        raise PluginError(f"classifier {getattr(classifier, 'plugin_name', '?')!r} does not say where its input "
                          "cells lie in Hz and seconds", fix="implement input_grid(n_rows, n_cols) on the classifier "
                          "(CONTRIBUTING.md)") from exc
    return maps, np.asarray(frequencies, dtype=np.float64), np.asarray(times, dtype=np.float64)[:maps.shape[2]]
