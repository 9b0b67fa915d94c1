"""The ``ast`` classifier: transformers' Audio Spectrogram Transformer on the AST front end.

The paper's main model fine-tunes ``MIT/ast-finetuned-audioset-10-10-0.4593``. Here the model
comes from, in order of preference,

* ``{"pretrained": NAME_OR_FOLDER, "revision": ...}``: a transformers checkpoint, a local folder
  or a repo id already in the Hugging Face cache (nothing is downloaded when the environment is
  offline); the classification head is replaced by a 2-class one;
* ``{"size": "tiny" | "small" | "base", ...ASTConfig fields}``: a fresh model of that size,
  with any ``ASTConfig`` field overriding the preset (``hidden_size``, ``num_hidden_layers``,
  ``patch_size``, ``frequency_stride``, ``time_stride``, ``max_length``...).

Features are the AST front end of :mod:`steth_hub.features` (``[N, T, 128]`` log-mel filter
banks, the same computation as transformers' ``ASTFeatureExtractor``). Training centres them
bin by bin with the training set's average spectrum (much faster learning from scratch); when
training ends that offset is folded exactly into the position embeddings, so the trained model
takes the AST normalisation ``(x - mean) / (2 * std)`` with the training set's mean and std. A saved folder is a standard
transformers checkpoint (``config.json`` with ``id2label``, ``model.safetensors`` and a
``preprocessor_config.json`` holding those mean/std), so
``AutoModelForAudioClassification.from_pretrained`` and ``pipeline("audio-classification")``
load it as they are; ``steth.json`` adds the threshold and the preprocessing.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from steth_hub.classifier import LABELS
from steth_hub.errors import ConfigError, ModelError
from steth_hub.torch_classifier import TorchClassifier

#: ASTConfig presets. "base" is the published AST (86 M parameters); "small" and "tiny" are sized
#: for CPU training on hundreds of clips (non-overlapping 16x16 patches keep the sequence short).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
             "patch_size": 16, "frequency_stride": 16, "time_stride": 16},
    "small": {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 384,
              "patch_size": 16, "frequency_stride": 16, "time_stride": 16,
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "patch_size": 16, "frequency_stride": 10, "time_stride": 10},
}
#: keys of the plugin's config that are not ASTConfig fields
OWN_KEYS = {"size", "pretrained", "revision", "trust_remote_code", "front_end", "sample_rate", "preset",
            "local_files_only"}
#: the feature extractor settings saved in preprocessor_config.json beside the weights
FEATURE_FILE = "preprocessor_config.json"
#: ASTFeatureExtractor's frames (numpy path): this many samples, every FRAME_HOP samples, at its sampling_rate
FRAME_LENGTH, FRAME_HOP = 400, 160


def _ast_config_fields() -> set[str]:
    from transformers import ASTConfig

    return set(ASTConfig().to_dict())


class ASTClassifier(TorchClassifier):
    """Audio Spectrogram Transformer with a 2-class head (not asthma / asthma)."""

    plugin_name = "ast"
    feature_axes = {"time": 1, "freq": 2}

    def __init__(self, *, model_config: dict | None = None, net=None, front_end: dict | None = None,
                 mean: float | None = None, std: float | None = None, pretrained: str | None = None, **kwargs):
        kwargs.setdefault("sample_rate", 16000)
        super().__init__(**kwargs)
        self.model_config = dict(model_config or {})  # ASTConfig fields (used when net is built lazily)
        self.net = net
        self.front_end_config = dict(front_end or {})
        self.mean = mean
        self.std = std
        self.bin_mean = None  # per-bin centring, only while training (see fit_normalisation)
        self.pretrained = pretrained
        self._front_end = None

    # -- building ---------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict) -> "ASTClassifier":
        """A fresh AST (from a size preset and ASTConfig fields) or one initialised from a checkpoint."""
        config = copy.deepcopy(config or {})
        fields = _ast_config_fields()
        unknown = sorted(set(config) - fields - OWN_KEYS)
        if unknown:
            raise ConfigError(f"unknown ast setting(s): {', '.join(unknown)}",
                              fix="use size, pretrained, revision, front_end, sample_rate or ASTConfig fields "
                                  "(hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, "
                                  "patch_size, frequency_stride, time_stride, max_length...)")
        common = {"sample_rate": int(config.pop("sample_rate", 16000)), "front_end": config.pop("front_end", None),
                  "preset": config.pop("preset", None)}
        pretrained = config.pop("pretrained", None)
        revision = config.pop("revision", None)
        trust_remote_code = bool(config.pop("trust_remote_code", False))
        local_only = config.pop("local_files_only", None)
        size = config.pop("size", None if pretrained else "small")
        if pretrained:
            net = _load_pretrained(pretrained, revision, trust_remote_code, local_only, overrides=config)
            mean, std = _checkpoint_normalisation(pretrained, revision, local_only)
            model = cls(model_config=net.config.to_dict(), net=net, pretrained=str(pretrained), **common)
            # a checkpoint's own statistics until fit() learns this data's
            model.mean, model.std = mean, std
            return model
        if size not in SIZES:
            raise ConfigError(f"unknown ast size {size!r}", fix=f"use one of: {', '.join(SIZES)}")
        model_config = dict(SIZES[size])
        model_config.update(config)
        return cls(model_config=model_config, **common)

    def _build_net(self, max_length: int):
        """Build a fresh network once the number of frames per clip is known."""
        from transformers import ASTConfig, ASTForAudioClassification

        cfg = dict(self.model_config)
        cfg.setdefault("max_length", int(max_length))
        cfg.update(num_labels=2, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)},
                   num_mel_bins=self.num_mel_bins)
        cfg = {k: v for k, v in cfg.items() if k not in {"transformers_version", "architectures", "model_type"}}
        self.net = ASTForAudioClassification(ASTConfig(**cfg))
        self.model_config = self.net.config.to_dict()
        return self.net

    @property
    def max_length(self) -> int | None:
        if self.net is not None:
            return int(self.net.config.max_length)
        return self.model_config.get("max_length")

    # -- features ---------------------------------------------------------------
    def front_end(self, n_frames: int):
        """The AST front end of steth_hub.features, un-normalised and ``n_frames`` long (built once)."""
        if self._front_end is None or self._front_end.extractor.max_length != n_frames:
            from steth_hub.features import ASTFrontEnd

            settings = dict(self.front_end_config)
            settings.update(sampling_rate=self.front_end_rate, num_mel_bins=self.num_mel_bins,
                            max_length=int(n_frames), do_normalize=False)
            self._front_end = ASTFrontEnd(**settings)
        return self._front_end

    @property
    def front_end_rate(self) -> int:
        """The rate the front end works at: ``front_end.sampling_rate``, else the clips' rate."""
        return int(self.front_end_config.get("sampling_rate") or self.sample_rate)

    @property
    def num_mel_bins(self) -> int:
        return int(self.front_end_config.get("num_mel_bins") or 128)

    def frames_for(self, n_samples: int, sample_rate: int) -> int:
        """Filter-bank frames of a clip: 400-sample windows every 160 samples at the front end's rate.

        That is ASTFeatureExtractor's rule (Kaldi's snip_edges; 25 ms every 10 ms at 16 kHz).
        """
        n = int(round(n_samples * self.front_end_rate / float(sample_rate)))
        return max(1, 1 + (n - FRAME_LENGTH) // FRAME_HOP)

    def feature_signature(self, sample_rate: int, n_samples: int):
        return ("ast-fbank", self.front_end_rate, self.num_mel_bins, int(sample_rate),
                self.max_length or self.frames_for(n_samples, sample_rate), sorted(self.front_end_config.items()))

    def featurise(self, waveforms, sample_rate: int):
        """Raw log-mel filter banks ``[N, max_length, 128]`` (padded with 0 or cut, as ASTFeatureExtractor does).

        ``max_length`` is the model's; before the network exists it is the clips' own length.
        """
        import torch

        waveforms = np.asarray(waveforms, dtype=np.float32)
        length = self.max_length or self.frames_for(waveforms.shape[-1], sample_rate)
        if self.front_end_rate != 16000 and _torchaudio_front_end():
            return torch.as_tensor(self._numpy_fbank(waveforms, int(sample_rate), length), dtype=torch.float32)
        x = self.front_end(length)(waveforms, int(sample_rate))
        return torch.as_tensor(x, dtype=torch.float32)

    def _numpy_fbank(self, waveforms: np.ndarray, sample_rate: int, length: int) -> np.ndarray:
        """ASTFeatureExtractor's numpy filter banks, computed here (``[N, length, num_mel_bins]``).

        Where torchaudio is importable, ASTFeatureExtractor switches to Kaldi framing in
        milliseconds (25 ms / 10 ms), which equals its numpy path (400 / 160 samples) only at
        16 kHz. A model with another front-end rate was trained on the numpy path, so steth-hub
        computes exactly that here instead of letting the extractor change the features.
        """
        from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

        from steth_hub.audio import resample

        rate, bins = self.front_end_rate, self.num_mel_bins
        filters = mel_filter_bank(num_frequency_bins=257, num_mel_filters=bins, min_frequency=20,
                                  max_frequency=rate // 2, sampling_rate=rate, norm=None, mel_scale="kaldi",
                                  triangularize_in_mel_space=True)
        window = window_function(FRAME_LENGTH, "hann", periodic=False)
        out = np.zeros((len(waveforms), int(length), bins), dtype=np.float32)
        for i, row in enumerate(waveforms):
            if sample_rate != rate:
                row = resample(row, sample_rate, rate)
            fbank = spectrogram(row, window, frame_length=FRAME_LENGTH, hop_length=FRAME_HOP, fft_length=512,
                                power=2.0, center=False, preemphasis=0.97, mel_filters=filters, log_mel="log",
                                mel_floor=1.192092955078125e-07, remove_dc_offset=True).T
            n = min(int(length), fbank.shape[0])
            out[i, :n] = fbank[:n]
        return out

    def onnx_frontend(self) -> dict:
        """The light runtime's front end: ``ast-fbank-numpy`` (numpy only) at this model's settings."""
        return {"name": "ast-fbank-numpy", "config": {"sampling_rate": self.front_end_rate,
                                                      "num_mel_bins": self.num_mel_bins,
                                                      "max_length": int(self.max_length)}}

    def fit_normalisation(self, features) -> None:
        """Training statistics: each mel bin's mean (the average spectrum) and one std of the centred values.

        Training subtracts the average spectrum bin by bin: after band-limiting, the upper mel
        bins are a constant floor and the differences between recordings are small beside the
        spectrum's shape, so an AST from scratch learns several times faster on centred input.
        :meth:`fold_normalisation` then moves that per-bin offset into the position embeddings,
        so the saved model takes ASTFeatureExtractor's scalar normalisation exactly.
        """
        import torch

        self.bin_mean = features.mean(dim=(0, 1)).to(torch.float32)
        self.mean = float(self.bin_mean.mean())
        self.std = float((features - self.bin_mean).std().clamp_min(1e-6))
        if self.net is None:
            self._build_net(features.shape[1])

    def normalise(self, features):
        if self.mean is None or self.std is None:
            raise ModelError("the AST has no normalisation statistics", fix="train it (fit) or load a saved model")
        centre = self.bin_mean if getattr(self, "bin_mean", None) is not None else self.mean
        return (features - centre) / (2.0 * self.std)

    def fold_normalisation(self) -> None:
        """Make the network take ``(x - mean) / (2 std)`` (one scalar mean) instead of per-bin centring.

        The inputs differ by a constant per mel bin, ``d = (bin_mean - mean) / (2 std)``. The patch
        embedding is a convolution, so that adds a constant to every patch's embedding, the same
        for every recording; subtracting it from the position embeddings gives identical outputs.
        """
        import torch

        if getattr(self, "bin_mean", None) is None or self.net is None:
            return
        emb = self.net.audio_spectrogram_transformer.embeddings
        conv = emb.patch_embeddings.projection
        device = conv.weight.device
        delta = ((self.bin_mean - self.mean) / (2.0 * self.std)).to(device)
        length = int(self.net.config.max_length)
        image = delta.view(1, 1, -1, 1).expand(1, 1, delta.numel(), length).contiguous()
        with torch.no_grad():
            offset = torch.nn.functional.conv2d(image, conv.weight, None, conv.stride, conv.padding)
            offset = offset.flatten(2).transpose(1, 2)  # [1, patches, hidden], as ASTPatchEmbeddings lays them out
            emb.position_embeddings[:, 2:, :] -= offset.to(emb.position_embeddings.dtype)
        self.bin_mean = None

    def set_trained_module(self, module) -> None:
        super().set_trained_module(module)
        self.fold_normalisation()

    def torch_module(self):
        if self.net is None:
            raise ModelError("the AST network is built when training starts", fix="call fit() first")
        return self.net

    def logits(self, net, features):
        return net(input_values=features).logits

    def head_parameters(self, net):
        """The classification head's parameters (what ``freeze_encoder`` leaves trainable)."""
        return list(net.classifier.parameters())

    def pooled(self, net, features):
        """The pooled representation the classification head reads (the [CLS] and distillation tokens' mean)."""
        return net.audio_spectrogram_transformer(input_values=features).pooler_output

    # -- what the core asks a classifier (explainers, cards, warnings) ------------
    default_explainer = "integrated-gradients"

    def input_grid(self, n_rows: int, n_cols: int):
        """Centre Hz of each mel bin and centre s of each frame of the AST input (rows = bins)."""
        from steth_builtin.grids import ast_grid

        if self.net is None or n_rows != int(self.net.config.num_mel_bins):
            raise ModelError(f"input has {n_rows} frequency rows, the AST {self.num_mel_bins} mel bins",
                             fix="explain a trained AST")
        frequencies, times = ast_grid(self, self.net.config)
        return frequencies, times[:n_cols]

    def attribution_region(self):
        """Cells one input patch covers (frequency, time): the unit Integrated Gradients pools over."""
        return int(self.net.config.frequency_stride), int(self.net.config.time_stride)

    def band_hz(self):
        from steth_builtin.grids import AST_MEL_MIN_HZ

        return AST_MEL_MIN_HZ, self.front_end_rate / 2.0

    def card_facts(self) -> dict:
        n_params = int(sum(p.numel() for p in self.net.parameters())) if self.net is not None else None
        return {"architecture": "Audio Spectrogram Transformer (transformers ASTForAudioClassification)",
                "library": "transformers", "parameters": n_params, "front_end_rate": self.front_end_rate,
                "front_end_bins": self.num_mel_bins,
                "front_end": f"Kaldi-style log-mel filter banks, {self.num_mel_bins} bins, 400-sample windows every "
                             f"160 samples at {self.front_end_rate} Hz"}

    # -- saving -----------------------------------------------------------------
    def feature_extractor(self):
        """An ``ASTFeatureExtractor`` that reproduces this model's input for transformers' pipeline."""
        from transformers import ASTFeatureExtractor

        return ASTFeatureExtractor(sampling_rate=self.front_end_rate, num_mel_bins=self.num_mel_bins,
                                   max_length=int(self.max_length),
                                   do_normalize=True, mean=float(self.mean), std=float(self.std))

    def _save_weights(self, directory: Path) -> None:
        if self.net is None:
            raise ModelError("nothing to save: the AST was never trained", fix="call fit() before save_pretrained()")
        self.net.save_pretrained(directory)  # transformers 5 writes safetensors only
        if not (directory / "model.safetensors").is_file():
            raise ModelError("transformers did not write model.safetensors", path=directory,
                             fix="upgrade transformers (steth-hub saves safetensors only)")
        self.feature_extractor().save_pretrained(directory)

    def steth_metadata(self) -> dict:
        meta = super().steth_metadata()
        meta["ast"] = {"mean": self.mean, "std": self.std, "front_end": self.front_end_config,
                       "pretrained": self.pretrained}
        return meta

    @classmethod
    def _load_weights(cls, directory: Path, metadata: dict) -> "ASTClassifier":
        from transformers import ASTForAudioClassification

        if not (directory / "model.safetensors").is_file():
            raise ModelError("no model.safetensors in the AST folder", path=directory,
                             fix="save the model again with save_pretrained (weights are safetensors only)")
        with _no_weight_loading_bar():
            net, info = ASTForAudioClassification.from_pretrained(str(directory), local_files_only=True,
                                                                  use_safetensors=True, output_loading_info=True)
        from steth_hub.classifier import check_loading_info  # strict: never a silently re-initialised tensor

        check_loading_info(directory, info)
        net.eval()
        own = metadata.get("ast") or {}
        mean, std = own.get("mean"), own.get("std")
        if mean is None or std is None:
            mean, std = _checkpoint_normalisation(str(directory), None, True)
        return cls(model_config=net.config.to_dict(), net=net, front_end=own.get("front_end"), mean=mean, std=std,
                   pretrained=own.get("pretrained"), sample_rate=int(metadata.get("sample_rate", 16000)))


#: one hook swap at a time: two overlapping loads must not leave the silencing hook installed
_BAR_LOCK = threading.RLock()


@contextlib.contextmanager
def _no_weight_loading_bar():
    """Hide transformers' "Loading weights" progress bar for one load.

    The user's own progress-bar setting is left as it was: transformers' tqdm hook is set for
    the call and the previous hook put back (download bars, which are huggingface_hub's, are
    untouched); a lock keeps overlapping loads from interleaving the swap. Transformers without
    the hook (4.x) is left alone: there, switching its bar off also switches huggingface_hub's.
    """
    from transformers.utils import logging as tf_logging

    if not hasattr(tf_logging, "set_tqdm_hook"):
        yield
        return
    with _BAR_LOCK:
        previous = tf_logging.set_tqdm_hook(lambda factory, args, kwargs: tf_logging.EmptyTqdm(*args, **kwargs))
        try:
            yield
        finally:
            tf_logging.set_tqdm_hook(previous)


def _torchaudio_front_end() -> bool:
    """Whether ASTFeatureExtractor would compute its filter banks with torchaudio (Kaldi, millisecond framing)."""
    from transformers.models.audio_spectrogram_transformer import feature_extraction_audio_spectrogram_transformer as fe

    return bool(fe.is_speech_available())


def _load_pretrained(name: str, revision: str | None, trust_remote_code: bool, local_only: bool | None,
                     overrides: dict):
    """An AST checkpoint with a fresh 2-class head; remote code only with a pinned revision."""
    from transformers import ASTForAudioClassification

    if trust_remote_code and not (revision and len(str(revision)) == 40):
        raise ConfigError("trust_remote_code needs a pinned revision (a 40-character commit hash)",
                          fix="add revision: <commit sha> next to pretrained, or drop trust_remote_code")
    folder = Path(str(name)).expanduser()
    is_local = folder.is_dir()
    kwargs = dict(num_labels=2, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)},
                  ignore_mismatched_sizes=True, use_safetensors=True, trust_remote_code=trust_remote_code)
    if revision and not is_local:
        kwargs["revision"] = revision
    if local_only is not None:
        kwargs["local_files_only"] = bool(local_only)
    kwargs.update(overrides)
    try:
        with _no_weight_loading_bar():
            net = ASTForAudioClassification.from_pretrained(str(folder) if is_local else str(name), **kwargs)
    except OSError as exc:
        raise ModelError(f"cannot load the AST checkpoint {name!r}: {exc}", path=str(name),
                         fix="pass a local checkpoint folder, or put the repo in the Hugging Face cache "
                             "(nothing is downloaded offline)") from exc
    return net


def _checkpoint_normalisation(name: str, revision: str | None, local_only: bool | None) -> tuple[float, float]:
    """mean/std from a checkpoint's preprocessor_config.json, else AST's AudioSet values."""
    from transformers import ASTFeatureExtractor

    folder = Path(str(name))
    try:
        if folder.is_dir():
            data = json.loads((folder / FEATURE_FILE).read_text(encoding="utf-8"))
            return float(data["mean"]), float(data["std"])
        fe = ASTFeatureExtractor.from_pretrained(name, revision=revision, local_files_only=bool(local_only))
        return float(fe.mean), float(fe.std)
    except (OSError, KeyError, ValueError):
        fe = ASTFeatureExtractor()
        return float(fe.mean), float(fe.std)
