"""The EfficientAT MobileNetV3 audio tagger ("mn04", "mn05", "mn10", "mn20"...), built on torchvision's blocks.

EfficientAT (Schmid, Koutini, Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN
Knowledge Distillation", ICASSP 2023; MIT licence) trains torchvision's ``mobilenet_v3_large``
layout on AudioSet log-mel images. The network here is written in this project from
torchvision's building blocks (``Conv2dNormActivation`` and the MobileNetV3 block table) with the
three differences EfficientAT's checkpoints need:

* the first convolution takes 1 channel (a log-mel image);
* squeeze-excitation pools over frequency and time and stores its two layers as ``Linear``
  under ``block.2.conc_se_layers.0.fc1/fc2`` (ReLU, then a plain sigmoid gate);
* the head is ``classifier``: average pool, flatten, Linear(last conv -> last channel),
  Hardswish, Dropout, Linear(-> 527 AudioSet classes).

Width is a parameter: ``width_mult`` 0.4 is ``mn04`` (about 0.99 M parameters), 0.5 ``mn05``,
1.0 ``mn10``, 2.0 ``mn20``; each of their published state dicts loads into the model of its width.
:func:`load_encoder_weights` loads a safetensors file strictly: every tensor matched by name and
shape, or an error naming the file and the tensors. Pickle files are never read here
(``steth convert`` turns a published ``.pt`` into safetensors once, with ``weights_only=True``).
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

from steth_hub.errors import ModelError

#: AudioSet classes of the published checkpoints
AUDIOSET_CLASSES = 527
#: widths of the published EfficientAT MobileNets, by name
WIDTHS = {"mn01": 0.1, "mn02": 0.2, "mn04": 0.4, "mn05": 0.5, "mn10": 1.0, "mn20": 2.0, "mn30": 3.0, "mn40": 4.0}


@functools.lru_cache(maxsize=None)
def _classes():
    """``MobileNetAT``, the network class, built on first use so importing this module stays light."""
    import torch
    from torch import nn
    from torchvision.models.mobilenetv3 import _mobilenet_v3_conf
    from torchvision.ops.misc import Conv2dNormActivation

    class SqueezeExcitation(nn.Module):
        """Channel attention from the mean over frequency and time: ``x * sigmoid(fc2(relu(fc1(mean))))``."""

        def __init__(self, channels: int, squeeze: int):
            super().__init__()
            self.fc1 = nn.Linear(channels, squeeze)
            self.fc2 = nn.Linear(squeeze, channels)

        def forward(self, x):
            scale = x.mean(dim=(2, 3))
            scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(scale))))
            return x * scale[:, :, None, None]

    class ChannelSE(nn.Module):
        """Holds the one squeeze-excitation EfficientAT's checkpoints store under ``conc_se_layers.0``."""

        def __init__(self, channels: int, squeeze: int):
            super().__init__()
            self.conc_se_layers = nn.ModuleList([SqueezeExcitation(channels, squeeze)])

        def forward(self, x):
            return self.conc_se_layers[0](x)

    def make_divisible(value: float, divisor: int = 8) -> int:
        new = max(divisor, int(value + divisor / 2) // divisor * divisor)
        return new + divisor if new < 0.9 * value else new

    class InvertedResidual(nn.Module):
        """torchvision's MobileNetV3 block with EfficientAT's squeeze-excitation."""

        def __init__(self, cnf, norm_layer):
            super().__init__()
            self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
            activation = nn.Hardswish if cnf.use_hs else nn.ReLU
            layers: list[nn.Module] = []
            if cnf.expanded_channels != cnf.input_channels:
                layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, kernel_size=1,
                                                   norm_layer=norm_layer, activation_layer=activation))
            stride = 1 if cnf.dilation > 1 else cnf.stride
            layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.expanded_channels, kernel_size=cnf.kernel,
                                               stride=stride, dilation=cnf.dilation, groups=cnf.expanded_channels,
                                               norm_layer=norm_layer, activation_layer=activation))
            if cnf.use_se:
                layers.append(ChannelSE(cnf.expanded_channels, make_divisible(cnf.expanded_channels // 4, 8)))
            layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, kernel_size=1,
                                               norm_layer=norm_layer, activation_layer=None))
            self.block = nn.Sequential(*layers)

        def forward(self, x):
            out = self.block(x)
            return out + x if self.use_res_connect else out

    class MobileNetAT(nn.Module):
        """EfficientAT's MobileNetV3 over ``[N, 1, mels, frames]`` log-mel; ``forward`` gives AudioSet logits.

        ``embed(x)`` returns ``(last feature map [N, C, F', T'], AudioSet logits [N, classes])``.
        """

        def __init__(self, width_mult: float = 0.4, num_classes: int = AUDIOSET_CLASSES, dropout: float = 0.2):
            super().__init__()
            from functools import partial

            setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_large", width_mult=float(width_mult))
            norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
            layers: list[nn.Module] = [Conv2dNormActivation(1, setting[0].input_channels, kernel_size=3, stride=2,
                                                            norm_layer=norm_layer, activation_layer=nn.Hardswish)]
            layers += [InvertedResidual(cnf, norm_layer) for cnf in setting]
            last_in = setting[-1].out_channels
            layers.append(Conv2dNormActivation(last_in, 6 * last_in, kernel_size=1, norm_layer=norm_layer,
                                               activation_layer=nn.Hardswish))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(6 * last_in, last_channel),
                                            nn.Hardswish(), nn.Dropout(p=dropout), nn.Linear(last_channel, num_classes))
            self.width_mult = float(width_mult)
            self.embedding_channels = 6 * last_in

        def embed(self, x):
            fmap = self.features(x)
            return fmap, self.classifier(fmap)

        def forward(self, x):
            return self.classifier(self.features(x))

    return MobileNetAT


def build_network(width_mult: float = 0.4, num_classes: int = AUDIOSET_CLASSES):
    """A randomly initialised EfficientAT MobileNetV3 of this width."""
    return _classes()(width_mult=width_mult, num_classes=num_classes)


def width_of(name_or_width) -> float:
    """``"mn04"`` -> 0.4; a number is returned as a float."""
    if isinstance(name_or_width, str):
        if name_or_width not in WIDTHS:
            from steth_hub.errors import ConfigError

            raise ConfigError(f"unknown EfficientAT model {name_or_width!r}",
                              fix="use one of " + ", ".join(WIDTHS) + " or a width_mult number")
        return WIDTHS[name_or_width]
    return float(name_or_width)


def load_state_strictly(net, state: dict, path: str | os.PathLike, *, prefix: str = "") -> None:
    """Copy ``state`` into ``net``: every tensor must be matched by name and shape, or :class:`ModelError`.

    The error names the file and, for each kind of mismatch, up to five tensors.
    """
    own = net.state_dict()
    names = {k[len(prefix):] if prefix and k.startswith(prefix) else k: v for k, v in state.items()}
    missing = sorted(set(own) - set(names))
    unexpected = sorted(set(names) - set(own))
    shapes = sorted(f"{k} {tuple(names[k].shape)} (the network has {tuple(own[k].shape)})"
                    for k in set(own) & set(names) if tuple(own[k].shape) != tuple(names[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for what, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if items:
                parts.append(f"{len(items)} {what}: " + ", ".join(items[:5]) + (" ..." if len(items) > 5 else ""))
        raise ModelError("the weights do not fit the network (" + "; ".join(parts) + ")", path=path,
                         fix="give the checkpoint of the same architecture and width (mn04 = width_mult 0.4)")
    net.load_state_dict(names, strict=True)


def read_safetensors(path: str | os.PathLike) -> dict:
    """All tensors of a safetensors file, with one-line errors for a missing, pickle or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError("weights file not found", path=path,
                         fix="point to the encoder's model.safetensors (e.g. ../shared/models/efficientat-mn04-as/)")
    if path.suffix != ".safetensors":
        raise ModelError(f"refusing {path.suffix or 'extension-less'} weights: only safetensors are loaded", path=path,
                         fix="convert a published .pt once with `steth convert FILE.pt OUT.safetensors`")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"not a readable safetensors file ({exc})", path=path,
                         fix="re-download or re-convert the weights") from exc


def load_encoder_weights(net, path: str | os.PathLike) -> None:
    """Load a published EfficientAT state dict (as safetensors) into ``net`` strictly."""
    load_state_strictly(net, read_safetensors(path), path)


def audioset_labels(directory: str | os.PathLike | None = None) -> list[str]:
    """The 527 AudioSet class names from ``audioset_class_labels_indices.csv`` (index, mid, display_name)."""
    if directory is None:
        raise ModelError("no AudioSet label file given", fix="pass the encoder folder holding "
                         "audioset_class_labels_indices.csv")
    path = Path(directory)
    if path.is_dir():
        path = path / "audioset_class_labels_indices.csv"
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return [row["display_name"] for row in sorted(rows, key=lambda r: int(r["index"]))]
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"cannot read the AudioSet class names ({exc})", path=path,
                         fix="use the CSV that comes with the encoder") from exc
