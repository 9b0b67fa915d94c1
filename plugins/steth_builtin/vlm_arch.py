"""``steth_llava``: a small Llava-style vision-language model whose vision tower is an audio encoder.

Parts (all trained or fine-tuned in this project; see ``steth_hub/models/vlm-asthma/README.md``):

* vision tower: EfficientAT's MobileNetV3 feature extractor (``mn04`` by default, the layout of
  :mod:`steth_builtin.efficientat_net`) reading the three-window log-mel image ``[N, 3, mels, frames]``
  (one channel per window; the first convolution takes 3 channels: the AudioSet-pretrained
  1-channel kernel divided by 3 in each, when initialised from it);
* projector: the last feature map pooled to a ``image_grid`` of cells (2 x 8 by default, 16 image
  tokens), each cell a 2-layer MLP into the language model's width;
* language model: a tiny ``LlamaForCausalLM`` (transformers) over a word-level vocabulary of the
  prompt JSON (:mod:`steth_builtin.vlm_tokenizer`).

Like Llava, each ``image_token_id`` in ``input_ids`` is replaced by one image token's embedding.
Importing this module registers the classes with transformers' Auto classes, so after
``import steth_builtin.vlm_arch`` plain ``AutoModelForImageTextToText.from_pretrained(folder)`` and
``AutoConfig.from_pretrained(folder)`` load a saved model (no remote code).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (AutoConfig, AutoModelForImageTextToText, GenerationMixin, LlamaConfig, LlamaForCausalLM,
                          PretrainedConfig, PreTrainedModel)

MODEL_TYPE = "steth_llava"


class StethLlavaConfig(PretrainedConfig):
    """Configuration of :class:`StethLlavaForConditionalGeneration`."""

    model_type = MODEL_TYPE
    sub_configs = {"text_config": LlamaConfig}

    def __init__(self, text_config=None, width_mult: float = 0.4, in_channels: int = 3, image_grid=(2, 8),
                 image_token_id: int = 4, projector_hidden: int | None = None, **kwargs):
        if isinstance(text_config, dict):
            text_config = LlamaConfig(**{k: v for k, v in text_config.items() if k != "model_type"})
        self.text_config = text_config if text_config is not None else LlamaConfig(
            vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=False)
        self.width_mult = float(width_mult)
        self.in_channels = int(in_channels)
        self.image_grid = [int(x) for x in image_grid]
        self.image_token_id = int(image_token_id)
        self.projector_hidden = int(projector_hidden or self.text_config.hidden_size)
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    @property
    def n_image_tokens(self) -> int:
        return int(self.image_grid[0] * self.image_grid[1])


def _vision_tower(width_mult: float, in_channels: int) -> nn.Module:
    """EfficientAT MobileNetV3 ``features`` with a first convolution taking ``in_channels``."""
    from steth_builtin.efficientat_net import build_network

    features = build_network(width_mult).features
    first = features[0][0]
    features[0][0] = nn.Conv2d(in_channels, first.out_channels, kernel_size=first.kernel_size, stride=first.stride,
                               padding=first.padding, bias=first.bias is not None)
    return features


class StethLlavaForConditionalGeneration(PreTrainedModel, GenerationMixin):
    """Spectrogram image + prompt tokens -> next-token logits (Llava's layout, an audio CNN as the eye)."""

    config_class = StethLlavaConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = []
    _supports_sdpa = True

    def __init__(self, config: StethLlavaConfig):
        super().__init__(config)
        self.vision_tower = _vision_tower(config.width_mult, config.in_channels)
        channels = self.vision_tower[-1].out_channels if hasattr(self.vision_tower[-1], "out_channels") \
            else self.vision_tower[-1][0].out_channels
        hidden = config.text_config.hidden_size
        self.projector = nn.Sequential(nn.Linear(channels, config.projector_hidden), nn.GELU(),
                                       nn.Linear(config.projector_hidden, hidden))
        self.language_model = LlamaForCausalLM(config.text_config)
        self.post_init()

    def _init_weights(self, module):  # the tower keeps torch's own init (BatchNorm, conv) unless loaded
        if isinstance(module, nn.Linear) and any(module is m for m in self.projector.modules()):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif any(module is m for m in self.language_model.modules()):
            self.language_model._init_weights(module)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[N, 3, mels, frames]`` images in [0, 1] -> ``[N, n_image_tokens, hidden]``."""
        fmap = self.vision_tower(pixel_values.to(self.projector[0].weight.dtype) * 2.0 - 1.0)
        cells = nn.functional.adaptive_avg_pool2d(fmap, tuple(self.config.image_grid))
        return self.projector(cells.flatten(2).transpose(1, 2))

    def merge(self, input_ids: torch.Tensor, pixel_values=None, image_embeds=None) -> torch.Tensor:
        """Token embeddings with each image token's slot filled by the image's embeddings."""
        embeds = self.get_input_embeddings()(input_ids)
        if image_embeds is None and pixel_values is not None:
            image_embeds = self.image_tokens(pixel_values)
        if image_embeds is not None:
            mask = (input_ids == self.config.image_token_id)
            expected = image_embeds.shape[0] * image_embeds.shape[1]
            if int(mask.sum()) != expected:
                raise ValueError(f"{int(mask.sum())} image tokens in input_ids but {expected} image embeddings")
            embeds = embeds.masked_scatter(mask[..., None].expand_as(embeds), image_embeds.to(embeds.dtype))
        return embeds

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, labels=None, image_embeds=None,
                inputs_embeds=None, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.merge(input_ids, pixel_values, image_embeds)
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels,
                                   **kwargs)

    @torch.no_grad()
    def generate(self, input_ids=None, pixel_values=None, attention_mask=None, **kwargs):
        """New tokens only (the prompt's embeddings, image merged, go to the language model's generate)."""
        embeds = self.merge(input_ids, pixel_values)
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)


def register() -> None:
    """Register ``steth_llava`` with AutoConfig and AutoModelForImageTextToText (idempotent)."""
    AutoConfig.register(MODEL_TYPE, StethLlavaConfig, exist_ok=True)
    AutoModelForImageTextToText.register(StethLlavaConfig, StethLlavaForConditionalGeneration, exist_ok=True)


register()
