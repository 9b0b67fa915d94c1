"""The ``integrated-gradients`` explainer: Integrated Gradients (Sundararajan et al. 2017) via captum.

The attribution of each input cell (mel bin x frame) is the integral of the score's gradient
along the straight path from a baseline to the clip's features, times the cell's distance from
the baseline. It is the default for the ``ast`` classifier and works for ``densenet201`` too.

* **score**: the log-odds of the explained class, ``logit[c] - logit[1-c]`` (P(asthma) is its
  logistic).
* **baseline**: silence, i.e. the classifier's own features of an all-zero clip (every cell at
  the front end's floor). A cell is credited for how its sound, compared with no sound, moved
  the score. ``baseline="average"`` starts instead from zero in the normalised feature space
  (every cell at the training set's average level); that baseline can itself score as asthma
  (a flat spectrum is louder than a quiet clip in the bands a model watches), and then the
  attributions, which add up to the score's change from the baseline, say little.
* **map**: attributions are added up over regions of the input, then the positive part
  (evidence *for* the explained class) is kept and spread back over the input grid, each
  region's value at its centre, linear in between. Regions: for AST, the patch grid's strides
  (``frequency_stride`` x ``time_stride`` cells, read from its config: the resolution the model
  itself works at); for DenseNet 8 bands x 8 frames. Cell by cell, IG is dominated by a few cells
  of gradient noise; summed over a region (attributions are additive) it says what the region
  as a whole did. AST's input is ``[T, 128]`` and transposed; DenseNet's three windows are summed.
  The grids are in :mod:`steth_builtin.grids`.

Why it is the AST default: IG satisfies completeness (the attributions add up to the score's
change from the baseline; :meth:`IntegratedGradientsExplainer.attributions` returns them
signed, with captum's convergence delta) and depends only on the model's function, not on its
internals. On the planted-tone test (``tests/test_explain_planted.py``) it finds the tone for
every training seed tried, where the attention relevance of :mod:`steth_builtin.attention`
(one forward and backward, cheaper) sometimes credits a single patch at the tone's edge; and
it passes the randomisation check (rank correlation with a randomised model's map near 0).

Cost: ``n_steps`` forward and backward passes per clip (32 by default): about a second per
clip for a small AST on a CPU, far more for the 86 M-parameter base model (use a GPU, or fewer
steps at the price of a larger convergence delta).
"""

from __future__ import annotations

import numpy as np

from steth_builtin.grids import to_input_grid
from steth_hub.errors import PluginError
from steth_hub.explanation import ClipMaps, evaluating, interp_matrix, logits_module, network_input

#: region (mel bands x frames) attributions are summed over, for inputs without a patch grid
CNN_REGION = (8, 8)


def region_sums(maps: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum ``[N, F, T]`` over blocks of ``size`` cells (the last block of an axis may be smaller);
    returns the sums ``[N, F', T']`` and each block's centre row and column (in cells)."""
    n, f, t = maps.shape
    bf, bt = max(1, int(size[0])), max(1, int(size[1]))
    nf, nt = -(-f // bf), -(-t // bt)
    padded = np.zeros((n, nf * bf, nt * bt), dtype=np.float64)
    padded[:, :f, :t] = maps
    sums = padded.reshape(n, nf, bf, nt, bt).sum(axis=(2, 4))
    rows = np.array([(i * bf + min(f, (i + 1) * bf) - 1) / 2.0 for i in range(nf)])
    cols = np.array([(j * bt + min(t, (j + 1) * bt) - 1) / 2.0 for j in range(nt)])
    return sums, rows, cols


def spread(sums: np.ndarray, rows: np.ndarray, cols: np.ndarray, f: int, t: int) -> np.ndarray:
    """Region values back onto the ``f x t`` cells: each at its centre, linear in between."""
    return np.einsum("fi,nij,tj->nft", interp_matrix(np.arange(f), rows), sums, interp_matrix(np.arange(t), cols))


class IntegratedGradientsExplainer:
    """Integrated Gradients (captum) from silence, for ``ast`` and ``densenet201``.

    Args:
        n_steps: points on the path from the baseline (Gauss-Legendre, captum's default).
        baseline: ``"silence"`` (the features of an all-zero clip) or ``"average"`` (zero
            normalised features: the training set's average level in every cell).
        batch_size: clips per call.
        internal_batch_size: path points per forward pass (bounds memory); default ``n_steps``.
    """

    name = "integrated-gradients"
    method = "Integrated Gradients (captum)"

    BASELINES = ("silence", "average")

    def __init__(self, n_steps: int = 32, baseline: str = "silence", batch_size: int = 4,
                 internal_batch_size: int | None = None):
        if int(n_steps) < 2:
            raise PluginError(f"integrated-gradients needs n_steps >= 2, got {n_steps}", fix="use n_steps=32")
        if baseline not in self.BASELINES:
            raise PluginError(f"unknown integrated-gradients baseline {baseline!r}",
                              fix=f"use one of: {', '.join(self.BASELINES)}")
        self.n_steps = int(n_steps)
        self.baseline = baseline
        self.batch_size = max(1, int(batch_size))
        self.internal_batch_size = internal_batch_size

    def attributions(self, classifier, waveforms: np.ndarray, target: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Signed attributions shaped like the network input, and captum's convergence delta per clip
        (the attributions' sum minus the score's change from the baseline; near 0 when ``n_steps`` suffices)."""
        import torch
        from captum.attr import IntegratedGradients

        net = getattr(classifier, "net", None)
        if net is None:
            raise PluginError(f"classifier {getattr(classifier, 'plugin_name', '?')!r} has no trained network",
                              fix="train or load the model first")
        module = logits_module(classifier, net)

        def score(x):
            logits = module(x).float()
            return logits[:, target] - logits[:, 1 - target]

        features = network_input(classifier, waveforms)
        if self.baseline == "silence":
            baselines = network_input(classifier, np.zeros_like(np.asarray(waveforms, dtype=np.float32)))
        else:
            baselines = torch.zeros_like(features)
        device = next(net.parameters()).device
        ig = IntegratedGradients(score)
        parts, deltas = [], []
        with evaluating(net), torch.enable_grad():
            for i in range(0, len(features), self.batch_size):
                x = features[i:i + self.batch_size].to(device)
                base = baselines[i:i + self.batch_size].to(device)
                attr, delta = ig.attribute(x, baselines=base, n_steps=self.n_steps,
                                           internal_batch_size=self.internal_batch_size or self.n_steps * len(x),
                                           return_convergence_delta=True)
                parts.append(attr.detach().float().cpu().numpy())
                deltas.append(delta.detach().float().cpu().numpy().reshape(-1))
        return np.concatenate(parts), np.concatenate(deltas)

    def explain(self, classifier, waveforms: np.ndarray, target: int = 1) -> ClipMaps:
        """Maps ``[N, mel bins, frames]`` (positive attributions) for clips ``[N, S]`` at the classifier's rate."""
        values, _ = self.attributions(classifier, waveforms, target)
        net = classifier.net
        cells, frequencies, times = to_input_grid(classifier, net, values)
        region = getattr(classifier, "attribution_region", None)  # e.g. an AST's patch strides
        size = tuple(region()) if callable(region) else CNN_REGION
        sums, rows, cols = region_sums(cells, size)
        maps = spread(np.maximum(sums, 0.0), rows, cols, cells.shape[1], cells.shape[2])
        return ClipMaps(maps, frequencies, times, target="asthma" if target == 1 else "not_asthma",
                        method=f"{self.method}, {self.n_steps} steps from {self.baseline}, "
                               f"summed over {size[0]} x {size[1]} cells")
