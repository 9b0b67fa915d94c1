"""The ``gradcam`` explainer for the ``densenet201`` classifier: Grad-CAM (Selvaraju et al. 2017) via pytorch-grad-cam.

The target layer is the last dense block's output, ``features.norm5`` (for the other timm
networks the plugin can wrap: the last entry of timm's ``feature_info``; or any sub-module
named with ``layer=``). pytorch-grad-cam weights the layer's channels by their mean gradient,
keeps the positive part and upsamples the map to the input ``[128 mel bands, T frames]``, each
feature cell centred on the input cells it covers. Rows are the Slaney mel bands of the
multi-window log-mel (``f_min`` to ``f_max``), columns its frames (centred, ``hop`` apart).

The score explained is the log-odds of the target class, ``logit[c] - logit[1-c]``.

Resolution: DenseNet halves the input five times, so at ``features.norm5`` one cell covers 32
mel bands (a quarter of the mel axis) and 32 frames (320 ms). A 1 s tone at 875 Hz comes out
as a blob over roughly 0.3-2.5 kHz, centred on the right second. ``layer="features.denseblock3"``
(16 bands x 160 ms) is sharper and less class-specific; ``integrated-gradients`` works at the
input's own resolution.
"""

from __future__ import annotations

import numpy as np

from steth_builtin.grids import to_input_grid
from steth_hub.errors import PluginError
from steth_hub.explanation import ClipMaps, evaluating, logits_module, network_input


class LogOdds:
    """pytorch-grad-cam target: ``logit[c] - logit[1-c]`` of one clip's output."""

    def __init__(self, target: int):
        self.target = int(target)

    def __call__(self, output):
        return output[..., self.target] - output[..., 1 - self.target]


def cnn_target_layer(net):
    """The last convolutional feature map: DenseNet's ``features.norm5``, else timm's last ``feature_info``."""
    backbone = getattr(net, "backbone", net)
    features = getattr(backbone, "features", None)
    if features is not None and hasattr(features, "norm5"):
        return features.norm5
    info = getattr(backbone, "feature_info", None)
    if info:
        last = info[-1]
        name = last.get("module") if isinstance(last, dict) else None
        if name:
            return backbone.get_submodule(name)
    raise PluginError(f"cannot find the last feature layer of {type(backbone).__name__}",
                      fix="use a timm CNN (its feature_info names the layer) or a DenseNet")


class GradCAMExplainer:
    """Grad-CAM for ``densenet201`` at ``features.norm5``, through pytorch-grad-cam.

    Args:
        layer: the target layer as a dotted name inside the network's backbone (default: the
            last dense block's ``features.norm5``, or timm's last ``feature_info`` module).
        batch_size: clips per backward pass.
    """

    name = "gradcam"
    method = "Grad-CAM (pytorch-grad-cam)"

    def __init__(self, layer: str | None = None, batch_size: int = 8):
        self.layer = layer
        self.batch_size = max(1, int(batch_size))

    def target_layer(self, net):
        if self.layer is None:
            return cnn_target_layer(net)
        backbone = getattr(net, "backbone", net)
        try:
            return backbone.get_submodule(self.layer)
        except AttributeError as exc:
            raise PluginError(f"the network has no layer {self.layer!r}",
                              fix="name a sub-module of the backbone, e.g. features.norm5 or features.denseblock3") \
                from exc

    def explain(self, classifier, waveforms: np.ndarray, target: int = 1) -> ClipMaps:
        """Maps ``[N, mel bands, frames]`` for clips ``[N, S]`` at the classifier's rate."""
        from pytorch_grad_cam import GradCAM

        net = getattr(classifier, "net", None)
        if net is None or not callable(getattr(classifier, "gradcam_layer", None)) and self.layer is None:
            raise PluginError(f"gradcam explains CNN classifiers that name their last convolutional layer "
                              f"(gradcam_layer), not {classifier.plugin_name!r}",
                              fix="use the integrated-gradients explainer, or give --explainer-layer")
        features = network_input(classifier, waveforms)
        if features.ndim != 4:
            raise PluginError(f"Grad-CAM needs image-like features [N, C, F, T], got {tuple(features.shape)}",
                              fix="use a CNN classifier on spectrogram images")
        layer = self.target_layer(net) if self.layer is not None else classifier.gradcam_layer(net)
        with evaluating(net):
            cam = GradCAM(model=logits_module(classifier, net), target_layers=[layer])
            maps = self._run(cam, features, target)  # [N, F, T], upsampled by pytorch-grad-cam
        maps, frequencies, times = to_input_grid(classifier, net, maps[:, None])  # [N, 1, F, T]: one channel
        return ClipMaps(maps, frequencies, times, target="asthma" if target == 1 else "not_asthma",
                        method=f"{self.method}, {self.layer or 'last convolutional layer'}")

    def _run(self, cam, features, target: int) -> np.ndarray:
        """Run a pytorch-grad-cam object batch by batch, then remove its hooks. (Its context
        manager is not used: its ``__exit__`` swallows IndexError, which would hide a bug.)"""
        import torch

        out = []
        try:
            with torch.enable_grad():
                for i in range(0, len(features), self.batch_size):
                    x = features[i:i + self.batch_size].to(cam.device).requires_grad_(True)
                    out.append(cam(input_tensor=x, targets=[LogOdds(target)] * len(x)))
        finally:
            cam.activations_and_grads.release()
        return np.concatenate(out).astype(np.float32)
