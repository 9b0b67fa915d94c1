"""The ``attention`` explainer for the Audio Spectrogram Transformer: gradient-weighted attention relevance.

Method (Chefer, Gur and Wolf, "Generic Attention-model Explainability for Interpreting
Bi-Modal and Encoder-Decoder Transformers", ICCV 2021, the rule for self-attention): start
from the identity ``R = I`` over the tokens and, block by block, add the relevance that the
block's attention passes on,

    R <- R + mean_over_heads( (dS/dA * A)^+ ) @ R

where ``A`` is the block's attention matrix and ``S`` the explained score. The relevance of
each patch is its entry in the rows of the two pooled tokens: AST classifies the mean of its
CLS and distillation tokens, so the map is the mean of ``R[CLS, patches]`` and
``R[DIST, patches]``. ``S`` is the log-odds of the explained class, ``logit[c] - logit[1-c]``
(P(asthma) is the logistic of exactly that).

Why this rather than attention rollout (Abnar and Zuidema 2020): rollout multiplies the raw
attention matrices and so shows where information flows whatever the class; it cannot say
what counted *for asthma*. Weighting each attention by its gradient keeps only the attention
that raised the score. No maintained library (captum, pytorch-grad-cam) implements this rule,
so it is written here, in a few lines, on the attention weights transformers returns.

Measured limits (``docs/explainers.md``): it needs one forward and backward pass, but on the
planted-tone test it is reliable only for some training seeds; for others it credits a single
patch at the tone's edge, or breath sounds, while occluding the tone shows the model relies on
the tone. ``integrated-gradients`` finds the tone for every seed tried and is the AST default.

The AST cuts its input ``[T, 128]`` into patches on a (frequency x time) grid given by
``patch_size``, ``frequency_stride``, ``time_stride``, ``num_mel_bins`` and ``max_length``
(read from the model's config, never assumed); the patch tokens follow the CLS and
distillation tokens, frequency-major. Each patch's relevance sits at its centre (mel bin,
frame) and is interpolated onto the model's input grid: the kaldi mel bins of the front end
(20 Hz to half the sample rate) and its frames (25 ms every 10 ms).
"""

from __future__ import annotations

import contextlib

import numpy as np

from steth_builtin.grids import ast_grid, is_ast
from steth_hub.errors import PluginError
from steth_hub.explanation import ClipMaps, evaluating, interp_matrix, network_input

#: bytes of attention (weights, their gradients, saved softmax) allowed per batch
MEMORY_BUDGET = 1 << 30


def ast_network(classifier):
    """The classifier's transformers ``ASTForAudioClassification``; a clear error otherwise."""
    net = getattr(classifier, "net", None)
    if net is None or not is_ast(net):
        raise PluginError(f"classifier {getattr(classifier, 'plugin_name', type(classifier).__name__)!r} "
                          "holds no trained transformers AST", fix="train or load the ast model first")
    return net


def ast_layers(net):
    """The encoder blocks (transformers 5: ``.layers``; 4: ``.encoder.layer``)."""
    body = net.audio_spectrogram_transformer
    layers = getattr(body, "layers", None)
    if layers is None:
        layers = body.encoder.layer
    return layers


def patch_grid(config) -> tuple[int, int, np.ndarray, np.ndarray]:
    """``(frequency patches, time patches, centre mel bin of each patch row, centre frame of each column)``."""
    patch, f_stride, t_stride = int(config.patch_size), int(config.frequency_stride), int(config.time_stride)
    f_dim = (int(config.num_mel_bins) - patch) // f_stride + 1
    t_dim = (int(config.max_length) - patch) // t_stride + 1
    centre = (patch - 1) / 2.0
    return f_dim, t_dim, np.arange(f_dim) * f_stride + centre, np.arange(t_dim) * t_stride + centre


def patches_to_input(maps: np.ndarray, config) -> np.ndarray:
    """Patch-grid maps ``[N, f_dim, t_dim]`` -> input-grid maps ``[N, num_mel_bins, max_length]``,
    interpolating linearly between patch centres (edge values held)."""
    _, _, rows, cols = patch_grid(config)
    w_f = interp_matrix(np.arange(int(config.num_mel_bins)), rows)
    w_t = interp_matrix(np.arange(int(config.max_length)), cols)
    return np.einsum("fi,nij,tj->nft", w_f, np.asarray(maps, dtype=np.float64), w_t).astype(np.float32)


@contextlib.contextmanager
def eager_attention(net):
    """Compute attention explicitly (SDPA and flash kernels return no weights), then restore."""
    previous = getattr(net.config, "_attn_implementation", None)
    switch = previous not in (None, "eager")
    if switch:
        net.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            net.set_attn_implementation(previous)


class AttentionRelevance:
    """Gradient-weighted attention relevance for the ``ast`` classifier (Chefer et al. 2021).

    Args:
        batch_size: clips per pass; default: as many as fit in :data:`MEMORY_BUDGET`.
    """

    name = "attention"
    method = "gradient-weighted attention relevance (Chefer et al. 2021)"

    def __init__(self, batch_size: int | None = None):
        self.batch_size = batch_size

    def _batch_size(self, config, n_tokens: int) -> int:
        if self.batch_size:
            return max(1, int(self.batch_size))
        per_clip = 3 * 4 * int(config.num_hidden_layers) * int(config.num_attention_heads) * n_tokens ** 2
        return int(max(1, min(64, MEMORY_BUDGET // max(per_clip, 1))))

    def patch_relevance(self, classifier, waveforms: np.ndarray, target: int = 1) -> np.ndarray:
        """Relevance of each patch, ``[N, frequency patches, time patches]``."""
        import torch

        net = ast_network(classifier)
        config = net.config
        f_dim, t_dim, _, _ = patch_grid(config)
        features = network_input(classifier, waveforms)
        device = next(net.parameters()).device
        step = self._batch_size(config, f_dim * t_dim + 2)
        out_maps = []
        with evaluating(net), eager_attention(net), torch.enable_grad():
            for i in range(0, len(features), step):
                x = features[i:i + step].to(device)
                out = net(input_values=x, output_attentions=True)
                attentions = list(out.attentions or [])
                if not attentions or any(a is None for a in attentions):
                    raise PluginError("the AST returned no attention weights",
                                      fix="use a transformers version whose AST supports output_attentions")
                n_tokens = attentions[0].shape[-1]
                special = n_tokens - f_dim * t_dim
                if special < 1:
                    raise PluginError(f"AST has {n_tokens} tokens for a {f_dim} x {t_dim} patch grid",
                                      fix="check the model's patch_size, strides, num_mel_bins and max_length")
                logits = out.logits.float()
                score = (logits[:, target] - logits[:, 1 - target]).sum()
                grads = torch.autograd.grad(score, attentions)
                relevance = torch.eye(n_tokens, device=device, dtype=torch.float32).expand(len(x), -1, -1).clone()
                for a, g in zip(attentions, grads):
                    weighted = (g.float() * a.float()).clamp(min=0).mean(dim=1)
                    relevance = relevance + torch.bmm(weighted, relevance)
                pooled = relevance[:, :special, special:].mean(dim=1)  # CLS and distillation rows
                out_maps.append(pooled.reshape(len(x), f_dim, t_dim).detach().cpu().numpy())
        return np.concatenate(out_maps) if out_maps else np.zeros((0, f_dim, t_dim), np.float32)

    def explain(self, classifier, waveforms: np.ndarray, target: int = 1) -> ClipMaps:
        """Maps ``[N, 128 mel bins, max_length frames]`` for clips ``[N, S]`` at the classifier's rate."""
        net = ast_network(classifier)
        maps = patches_to_input(self.patch_relevance(classifier, waveforms, target), net.config)
        frequencies, times = ast_grid(classifier, net.config)
        return ClipMaps(maps, frequencies, times, target="asthma" if target == 1 else "not_asthma",
                        method=self.method)
