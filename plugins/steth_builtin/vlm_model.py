"""The ``vlm`` classifier: a vision-language model reads the spectrogram image and the patient's facts.

The paper's third model (Moondream) read the three-window log-mel spectrogram as an image together
with a JSON of patient facts and wrote a diagnosis. Here the same input gives a *probability*, so
AUROC, thresholds and patient aggregation work as for every classifier:

* the image: :class:`steth_hub.features.MultiWindowLogMel` (25/100/175 ms windows, one RGB channel
  each, dB scaled to [0, 1] over the top 80 dB), low frequencies at the bottom;
* the prompt: :func:`steth_builtin.vlm_prompt.build_prompt` (task, sex, age, recording site,
  window widths; which fields is ``prompt_fields``; an unknown fact is left out and said so);
* the score: the log-likelihood of each candidate answer (``answers``: "not asthma" / "asthma",
  each followed by the end-of-sequence token) given image and prompt; a softmax over the two is
  P(asthma). ``generate_text`` writes a free answer and :func:`~steth_builtin.vlm_prompt.parse_answer`
  reads a label from it.

Families (``family``):

* ``native``: any transformers VLM that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load
  (SmolVLM/Idefics3, PaliGemma, Qwen2-VL, Llava...) from ``path`` (a local folder, or a repo id already
  in the Hugging Face cache: nothing is downloaded). Fine-tuned with LoRA (``peft``) by default.
* ``moondream``: Moondream2 through its own remote code, only with ``trust_remote_code: true`` *and*
  a pinned ``revision`` in the config. Moondream's code is known to break on transformers 5: with
  transformers>=5 installed, loading a Moondream checkpoint is refused before any of its code runs,
  with a message saying so. Other remote-code checkpoints that follow Moondream's 2024 interface
  (``encode_image``, ``input_embeds``, ``text_model``, ``answer_question``) load the same way.
  Zero-shot only (``finetune: none``); the threshold is chosen on the training recordings.
* ``steth-llava``: this project's small Llava-style model (:mod:`steth_builtin.vlm_arch`) whose
  vision tower is EfficientAT's AudioSet-pretrained encoder, built fresh from ``build`` and trained
  in full (the embedded ``steth/vlm-asthma`` is one).

Patient facts per clip. A classifier is given clips, not patients, so facts come from two places:
the corpus of the clips it is fitted on (``ClipSet.meta["corpus"]``: every clip of that corpus is
matched to its recording's ``sex``, ``age`` and ``site`` by the clip's samples, so held-out clips of
a cross-validation fold get their own patient's facts, and never any other column), and, when
screening, :meth:`VLMClassifier.register_recording` / :meth:`VLMClassifier.patient_facts`.
Clips with no known facts get a prompt without them. Training goes through the project's Trainer
loop (:func:`steth_hub.train.fit_torch`): its "logits" are the two candidates' log-likelihoods, so its
class-weighted cross-entropy trains the model to rank the right answer first.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from steth_builtin.vlm_prompt import (DEFAULT_TASK, PROMPT_FIELDS, PromptFacts, build_prompt, check_answers,
                                      check_fields, facts_from_row, make_facts, parse_answer)
from steth_hub.errors import ConfigError, ModelError

from steth_hub.torch_classifier import TorchClassifier

log = logging.getLogger(__name__)

FAMILIES = ("native", "moondream", "steth-llava")
FINETUNE = ("lora", "full", "none")
#: how an answer's tokens are combined: "sum" (the sequence log-likelihood) or "mean" (per token, so a
#: pretrained model does not favour the answer with fewer tokens before any training)
SCORES = ("sum", "mean")
OWN_KEYS = {"family", "path", "revision", "trust_remote_code", "prompt_fields", "task", "answers", "finetune", "score",
            "lora", "image", "build", "max_new_tokens", "caption_warmup", "preset", "sample_rate"}
IMAGE_KEYS = {"windows_ms", "hop_ms", "n_mels", "f_min", "f_max", "top_db"}
LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}
BUILD_KEYS = {"encoder_weights", "width_mult", "hidden_size", "layers", "heads", "intermediate_size",
              "image_grid"}
VLM_FILE = "vlm.json"
#: transformers versions Moondream2's remote code is known to work with
MOONDREAM_TRANSFORMERS = "<5"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
class _Recent(collections.OrderedDict):
    """A dict that keeps its ``limit`` most recently set entries: a long-running server (the demo)
    registers facts and images for every recording it screens, and must not grow without end."""

    def __init__(self, limit: int = 500_000):
        super().__init__()
        self.limit = int(limit)

    def __setitem__(self, key, value) -> None:
        if key in self:
            self.move_to_end(key)
        super().__setitem__(key, value)
        while len(self) > self.limit:
            self.popitem(last=False)


#: (image settings, sha1 of an image row) -> sha1 of the clip it was made from; filled when clips are
#: featurised (also when the feature cache answers later), read in logits() to find the clip's facts
_IMAGE_CLIPS: dict = _Recent(200_000)
#: corpus fingerprint + preset -> {sha1 of a clip's samples: PromptFacts}
_CORPUS_FACTS: dict = {}


def _sha(array) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def transformers_major() -> int:
    import transformers

    return int(str(transformers.__version__).split(".")[0])


def _is_moondream(config: Mapping) -> bool:
    names = [str(config.get("model_type") or "")] + [str(a) for a in config.get("architectures") or []]
    names += [str(v) for v in (config.get("auto_map") or {}).values()]
    return any("moondream" in n.lower() for n in names)


class VLMClassifier(TorchClassifier):
    """A vision-language model scoring "asthma" / "not asthma" for a spectrogram image and a prompt."""

    plugin_name = "vlm"
    feature_axes = {"time": 3, "freq": 2}
    predict_batch_size = 8
    input_description = "three-window log-mel image (25/100/175 ms windows as RGB, 128 mel bands, 10 ms hop)"

    def __init__(self, *, net=None, processor=None, family: str = "native", settings: dict | None = None, **kwargs):
        kwargs.setdefault("sample_rate", 16000)
        super().__init__(**kwargs)
        self.net = net
        self.processor = processor
        self.family = family
        self.settings = dict(settings or {})
        self.fields = check_fields(self.settings.get("prompt_fields"))
        self.task = str(self.settings.get("task") or DEFAULT_TASK)
        self.answers = check_answers(self.settings.get("answers"))
        self.image_config = dict(self.settings.get("image") or {})
        self._front_end = None
        # clip hash -> its patient's facts; bounded (a corpus's clips fit, a server's history does not grow)
        self._clip_facts: dict[str, PromptFacts] = _Recent(500_000)
        self._context: PromptFacts | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, config: dict) -> "VLMClassifier":
        config = copy.deepcopy(config or {})
        unknown = sorted(set(config) - OWN_KEYS)
        if unknown:
            raise ConfigError(f"unknown vlm setting(s): {', '.join(unknown)}", fix="use: " + ", ".join(sorted(OWN_KEYS)))
        family = str(config.get("family", "native"))
        if family not in FAMILIES:
            raise ConfigError(f"model.family {family!r} is not one of {', '.join(FAMILIES)}",
                              fix="use family: native (transformers VLMs), moondream (remote code) or steth-llava")
        finetune = str(config.get("finetune", {"native": "lora", "moondream": "none", "steth-llava": "full"}[family]))
        if finetune not in FINETUNE:
            raise ConfigError(f"model.finetune {finetune!r} is not one of {', '.join(FINETUNE)}",
                              fix="use finetune: lora, full or none")
        if family == "moondream" and finetune != "none":
            raise ConfigError("model.finetune: Moondream's remote code is scored zero-shot only",
                              fix="set finetune: none, or use a native family (family: native) for LoRA")
        for key, allowed in (("image", IMAGE_KEYS), ("lora", LORA_KEYS), ("build", BUILD_KEYS)):
            value = config.get(key)
            if value is not None and (not isinstance(value, dict) or set(value) - allowed):
                raise ConfigError(f"model.{key} has unknown key(s) {sorted(set(value) - allowed) if isinstance(value, dict) else value!r}",
                                  fix=f"use model.{key}: {{{', '.join(sorted(allowed))}}}")
        config["finetune"] = finetune
        score = str(config.get("score", "sum" if family == "steth-llava" else "mean"))
        if score not in SCORES:
            raise ConfigError(f"model.score {score!r} is not one of {', '.join(SCORES)}",
                              fix="use score: mean (per-token log-likelihood) or sum")
        config["score"] = score
        check_fields(config.get("prompt_fields"))
        check_answers(config.get("answers"))
        trust = config.get("trust_remote_code", False)
        if not isinstance(trust, bool):
            raise ConfigError(f"model.trust_remote_code must be true or false, got {trust!r}",
                              fix="write trust_remote_code: true (after reviewing the code) or leave it out")
        if family == "steth-llava":
            net, processor = build_steth_llava(config.get("build") or {})
        else:
            if not config.get("path"):
                raise ConfigError(f"model.path is missing (the {family} VLM to load)",
                                  fix="set model.path to a local model folder, or a repo id already in the "
                                      "Hugging Face cache")
            net, processor = load_pretrained_vlm(family, config["path"], revision=config.get("revision"),
                                                 trust_remote_code=trust)
        settings = {k: config[k] for k in ("prompt_fields", "task", "answers", "finetune", "score", "lora", "image",
                                           "max_new_tokens", "caption_warmup") if config.get(k) is not None}
        settings["source"] = {"family": family, "path": str(config.get("path") or "") or None,
                              "revision": config.get("revision"), "trust_remote_code": trust}
        model = cls(net=net, processor=processor, family=family, settings=settings,
                    sample_rate=int(config.get("sample_rate", 16000)), preset=config.get("preset"))
        if family == "steth-llava":
            model.metadata.update(steth_llava_parts(config.get("build") or {}, net))
        return model

    @property
    def _mean(self) -> bool:
        return self.settings.get("score", "sum") == "mean"

    # ------------------------------------------------------------------ the image
    def front_end(self):
        if self._front_end is None:
            from steth_hub.features import MultiWindowLogMel

            cfg = {"windows_ms": (25, 100, 175), "hop_ms": 10, "n_mels": 128, "f_min": 0.0, "f_max": 8000.0,
                   "top_db": 80.0}
            cfg.update(self.image_config)
            self._front_end = MultiWindowLogMel(sample_rate=self.sample_rate, **cfg)
        return self._front_end

    @property
    def windows_ms(self) -> tuple:
        return tuple(self.front_end().windows_ms)

    def feature_signature(self, sample_rate: int, n_samples: int):
        return ("vlm-image", int(sample_rate), sorted(self.front_end().config().items()))

    def featurise(self, waveforms, sample_rate: int):
        """Images ``[N, 3, mels, frames]`` in [0, 1]; each clip's prompt is recorded for ``logits``."""
        import torch

        waveforms = np.asarray(waveforms, dtype=np.float32)
        db = self.front_end()(waveforms, int(sample_rate))
        db = torch.as_tensor(db).float()
        top = db.amax(dim=(1, 2, 3), keepdim=True)
        images = ((db - top + 80.0) / 80.0).clamp(0.0, 1.0)
        key = self._image_key()
        for w, image in zip(waveforms, images):
            _IMAGE_CLIPS[(key, _sha(image.numpy()))] = _sha(w)
        return images

    def fit_normalisation(self, features) -> None:
        return None

    def normalise(self, features):
        return features

    # ------------------------------------------------------------------ facts and prompts
    def _image_key(self) -> str:
        return json.dumps(sorted(self.front_end().config().items()))

    def prompts_for_features(self, features) -> list[str]:
        """The prompt of each image row: the facts of the clip it was made from (registered, else the
        context's); an image not made by ``featurise`` (an explainer's blend) gets the context's."""
        key = self._image_key()
        out = []
        for f in features:
            clip = _IMAGE_CLIPS.get((key, _sha(f.detach().float().cpu().numpy())))
            facts = self._clip_facts.get(clip) if clip is not None else None
            out.append(self.prompt_for(facts or self._context)[0])
        return out

    def prompt_for(self, facts: PromptFacts | None) -> tuple[str, list[str]]:
        """``(prompt JSON, omitted fields)`` for these facts, with this model's settings."""
        return build_prompt(facts, fields=self.fields, task=self.task, windows_ms=self.windows_ms)

    def facts_for(self, waveform) -> PromptFacts:
        """The facts known for one clip: registered for its samples, else the context's, else none."""
        found = self._clip_facts.get(_sha(waveform))
        if found is not None:
            return found
        return self._context or PromptFacts()

    @contextlib.contextmanager
    def patient_facts(self, facts: PromptFacts | Mapping | None = None, **kwargs):
        """Within the block, clips with no registered facts are prompted with these (sex, age, site)."""
        if facts is None:
            facts = make_facts(**kwargs)
        elif isinstance(facts, Mapping):
            facts = make_facts(**{k: facts.get(k) for k in ("sex", "age", "site")})
        previous, self._context = self._context, facts
        try:
            yield facts
        finally:
            self._context = previous

    def register_clips(self, waveforms, facts: PromptFacts | Mapping) -> None:
        """These clips (by their samples) belong to a patient with ``facts``."""
        if isinstance(facts, Mapping):
            facts = make_facts(**{k: facts.get(k) for k in ("sex", "age", "site")})
        for w in np.asarray(waveforms, dtype=np.float32).reshape(-1, np.asarray(waveforms).shape[-1]):
            self._clip_facts[_sha(w)] = facts

    def register_recording(self, path, facts: PromptFacts | Mapping) -> list[str]:
        """Cut ``path`` as screening will and register its clips with ``facts``; returns the prompts used."""
        from steth_hub.screening import ScreeningPipeline, to_recording

        recording = to_recording(path, None)
        clips, _ = ScreeningPipeline(self).clips(recording, recording.source)
        waveforms = np.stack([c.samples for c in clips]).astype(np.float32)
        self.register_clips(waveforms, facts)
        return [self.prompt_for(self.facts_for(w))[0] for w in waveforms]

    def learn_corpus_facts(self, clips) -> float:
        """Register every clip of the corpus ``clips`` came from with its recording's sex, age and site.

        Reads ``clips.meta["corpus"]`` (the corpus folder) and ``clips.meta["preset"]``; returns the
        share of ``clips`` whose facts are now known (0 when the corpus is not at hand)."""
        meta = dict(getattr(clips, "meta", None) or {})
        corpus_path, preset = meta.get("corpus"), meta.get("preset")
        if corpus_path and preset and Path(corpus_path).is_dir():
            key = (str(Path(corpus_path).resolve()), meta.get("corpus_fingerprint"), json.dumps(preset, sort_keys=True))
            table = _CORPUS_FACTS.get(key)
            if table is None:
                table = _corpus_clip_facts(corpus_path, preset)
                _CORPUS_FACTS[key] = table
            self._clip_facts.update(table)
        if len(clips) == 0:
            return 0.0
        return float(np.mean([_sha(w) in self._clip_facts for w in clips.waveforms]))

    def prompt_report(self, waveforms) -> list[dict]:
        """Per clip: the prompt it is given and the prompt fields left out (unknown facts)."""
        out = []
        for w in np.asarray(waveforms, dtype=np.float32):
            prompt, omitted = self.prompt_for(self.facts_for(w))
            out.append({"prompt": prompt, "omitted": omitted})
        return out

    # ------------------------------------------------------------------ scoring
    def logits(self, net, features):
        """``[N, 2]``: log-likelihood of "not asthma" and of "asthma" (the configured answers) per clip."""
        prompts = self.prompts_for_features(features)
        if self.family == "steth-llava":
            return _score_steth_llava(self, net, features, prompts)
        if self.family == "moondream":
            return _score_moondream(self, net, features, prompts)
        return _score_native(self, net, features, prompts)

    def generate_text(self, waveforms, max_new_tokens: int | None = None) -> list[dict]:
        """Free answers per clip: ``{"text", "label" (parsed, or None), "prompt", "omitted"}``."""
        import torch

        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim == 1:
            waveforms = waveforms[None]
        from steth_hub.feature_cache import cached_features, feature_cache_disabled

        with feature_cache_disabled():
            images = cached_features(self, waveforms, self.sample_rate)
        n_new = int(max_new_tokens or self.settings.get("max_new_tokens") or 8)
        out = []
        self.net.eval()
        with torch.no_grad():
            for w, image in zip(waveforms, images):
                prompt, omitted = self.prompt_for(self.facts_for(w))
                if self.family == "steth-llava":
                    text = _generate_steth_llava(self, image, prompt, n_new)
                elif self.family == "moondream":
                    text = _generate_moondream(self, image, prompt, n_new)
                else:
                    text = _generate_native(self, image, prompt, n_new)
                out.append({"text": text, "label": parse_answer(text, self.answers), "prompt": prompt,
                            "omitted": omitted})
        return out

    # ------------------------------------------------------------------ training
    def fit(self, train, valid=None, recipe: dict | None = None, out_dir=None, **kwargs) -> dict:
        """Facts from the clips' corpus; then LoRA / full fine-tuning with the Trainer loop, or zero-shot."""
        import time

        from steth_hub.train import check_recipe, choose_threshold, training_facts

        if int(train.sample_rate) != self.sample_rate:
            self.sample_rate = int(train.sample_rate)
            self._front_end = None
        recipe = dict(recipe or {})
        if (recipe.get("augment") or {}):
            raise ConfigError("recipe.augment: masks and mixup would change the spectrogram image a VLM reads and "
                              "lose each clip's prompt", fix="remove augment from a vlm recipe")
        coverage = self.learn_corpus_facts(train)
        if valid is not None:
            self.learn_corpus_facts(valid)
        finetune = self.settings.get("finetune", "lora")
        started = time.perf_counter()
        if finetune == "none":
            checked = check_recipe(recipe)
            history = {"global_step": 0, "epochs": 0.0, "stopped_early": False, "seed": int(checked["seed"]),
                       "device": "cpu"}
            choose_threshold(self, train, valid, history)
        else:
            _untie_embeddings(self.net)
            if finetune == "lora":
                import torch

                torch.manual_seed(int(recipe.get("seed", 42)))  # the adapters' initial weights follow the recipe's seed
                self.net = _with_lora(self.net, self.settings.get("lora") or {}, self.family)
            elif self.settings.get("caption_warmup") and self.family == "steth-llava":
                _caption_warmup(self, train, int(self.settings["caption_warmup"]), seed=int(recipe.get("seed", 42)))
            history = super().fit(train, valid, recipe, out_dir, **kwargs)
        history["facts_coverage"] = round(coverage, 4)
        history["vlm_seconds"] = round(time.perf_counter() - started, 3)
        self.metadata.setdefault("training", {}).update(training_facts(train, history))
        self.metadata["training"]["prompt_facts_coverage"] = round(coverage, 4)
        return history

    def set_trained_module(self, module) -> None:
        if hasattr(module, "merge_and_unload"):  # a LoRA-wrapped model: fold the adapters in
            module = module.merge_and_unload()
        self.net = module
        self.net.eval()

    def encoder_parameters(self, net):
        base = getattr(net, "vision_tower", None)
        if base is None:
            base = getattr(getattr(net, "model", None), "vision_tower", None)
        return list(base.parameters()) if base is not None else []

    def head_parameters(self, net):
        enc = {id(p) for p in self.encoder_parameters(net)}
        return [p for p in net.parameters() if id(p) not in enc]

    # ------------------------------------------------------------------ what the core asks
    def extractor(self):
        """The image's front end (what ``steth_builtin.grids.logmel_grid`` reads)."""
        return self.front_end()

    def input_grid(self, n_rows: int, n_cols: int):
        """Centre Hz of each mel band and centre s of each frame of the image."""
        from steth_builtin.grids import logmel_grid

        return logmel_grid(self, n_rows, n_cols)

    def band_hz(self):
        fe = self.front_end()
        return fe.f_min, fe.f_max

    def describe_image(self) -> str:
        fe = self.front_end()
        windows = "/".join(f"{w:g}" for w in fe.windows_ms)
        return (f"three-window log-mel image ({windows} ms windows as RGB channels, {fe.n_mels} mel bands "
                f"{fe.f_min:g}-{fe.f_max:g} Hz, {fe.hop_ms:g} ms hop, top 80 dB scaled to [0, 1])")

    def card_facts(self) -> dict:
        source = self.settings.get("source") or {}
        n_params = int(sum(p.numel() for p in self.net.parameters())) if self.net is not None else None
        facts = {
            "architecture": self.metadata.get("architecture") or f"{type(self.net).__name__} ({self.family} VLM)",
            "parameters": n_params,
            "front_end": self.describe_image() + "; prompt JSON fields: " + ", ".join(self.fields),
            "front_end_rate": self.sample_rate,
            "library": "transformers" + (" + peft (LoRA)" if self.settings.get("finetune") == "lora" else ""),
            "mode": f"{self.family}, finetune {self.settings.get('finetune')}",
        }
        if self.metadata.get("parts"):
            facts["pretraining"] = "; ".join(f"{k}: {v}" for k, v in self.metadata["parts"].items())
        if self.metadata.get("attribution"):
            facts["attribution"] = self.metadata["attribution"]
        elif source.get("path"):
            facts["pretraining"] = f"{source.get('path')} (revision {source.get('revision') or 'as found'})"
        return facts

    # ------------------------------------------------------------------ saving
    def steth_metadata(self) -> dict:
        meta = super().steth_metadata()
        meta["vlm"] = self._vlm_settings()
        return meta

    def _vlm_settings(self) -> dict:
        return {"family": self.family, "prompt_fields": list(self.fields), "task": self.task, "answers": self.answers,
                "image": self.front_end().config(), "finetune": self.settings.get("finetune"),
                "score": self.settings.get("score", "sum"),
                "max_new_tokens": self.settings.get("max_new_tokens"),
                "source": self.settings.get("source")}

    def _save_weights(self, directory: Path) -> None:
        from steth_hub.fileio import atomic_write_json

        if self.family == "moondream":
            raise ModelError("a Moondream (remote-code) model is not saved by steth-hub: loading it back would run "
                             "remote code without the user's opt-in", fix="build it from its config each time "
                                                                           "(trust_remote_code: true, revision: <commit>)")
        net = self.net.merge_and_unload() if hasattr(self.net, "merge_and_unload") else self.net
        net.save_pretrained(directory, safe_serialization=True)
        if self.processor is not None:
            self.processor.save_pretrained(directory)
        atomic_write_json(directory / VLM_FILE, self._vlm_settings())

    @classmethod
    def _load_weights(cls, directory: Path, metadata: dict) -> "VLMClassifier":
        path = directory / VLM_FILE
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
            family = settings["family"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot read {VLM_FILE} ({type(exc).__name__}: {exc})", path=path,
                             fix="save the model again with steth-hub") from exc
        if family not in ("native", "steth-llava"):
            raise ModelError(f"{VLM_FILE} names family {family!r}, which is not loaded from a folder", path=path,
                             fix="use a native or steth-llava VLM folder")
        net, processor = load_pretrained_vlm(family, directory, revision=None, trust_remote_code=False)
        image = {k: v for k, v in (settings.get("image") or {}).items() if k in IMAGE_KEYS}
        keep = {"prompt_fields": settings.get("prompt_fields"), "task": settings.get("task"),
                "score": settings.get("score"),
                "answers": settings.get("answers"), "finetune": settings.get("finetune"), "image": image,
                "max_new_tokens": settings.get("max_new_tokens"), "source": settings.get("source")}
        model = cls(net=net, processor=processor, family=family, settings={k: v for k, v in keep.items() if v is not None},
                    sample_rate=int(metadata.get("sample_rate", 16000)))
        for key in ("architecture", "parts", "attribution"):
            if metadata.get(key) is not None:
                model.metadata[key] = metadata[key]
        return model


# ---------------------------------------------------------------------- loading
def load_pretrained_vlm(family: str, path, *, revision=None, trust_remote_code: bool = False):
    """``(model, processor)`` from a local folder or a cached repo id; never downloads.

    ``moondream`` needs ``trust_remote_code=True`` and a 40-hex ``revision``; a Moondream checkpoint
    is refused on transformers>=5 before any of its code is imported.
    """
    from steth_hub.classifier import check_safetensors_only

    folder = Path(str(path)).expanduser()
    if family == "moondream":
        if trust_remote_code is not True:
            raise ConfigError("model.trust_remote_code: a Moondream model runs its own code, which steth-hub does "
                              "only when asked", fix="review the model's code, then set trust_remote_code: true "
                                                     "and revision: <its 40-hex commit>")
        if not (isinstance(revision, str) and _COMMIT.match(revision)):
            raise ConfigError(f"model.revision {revision!r}: remote code runs only at a pinned commit",
                              fix="set revision to the reviewed 40-hex commit of the model repo")
    config_file = folder / "config.json" if folder.is_dir() else None
    if config_file is None:
        try:  # a repo id: only what the Hugging Face cache already holds
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(str(path), "config.json", revision=revision, local_files_only=True))
            folder = config_file.parent
        except Exception as exc:  # noqa: BLE001 - any failure means: not here, and we never download
            raise ConfigError(f"model.path {str(path)!r} is neither a folder nor a repo in the Hugging Face cache "
                              f"({type(exc).__name__})", fix="download the model once where the network is "
                                                             "allowed, then point model.path at its folder") from exc
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read config.json ({exc})", path=config_file, fix="give a transformers model folder") \
            from exc
    check_safetensors_only(folder)
    if family == "moondream" and _is_moondream(config) and transformers_major() >= 5:
        import transformers

        raise ModelError(f"Moondream2's remote code needs transformers{MOONDREAM_TRANSFORMERS} (installed: "
                         f"{transformers.__version__}); it is not run", path=folder,
                         fix="use a native VLM (family: native), or a separate environment with "
                             "pip install 'transformers<5' for Moondream")
    if family != "moondream" and config.get("auto_map") and not trust_remote_code:
        raise ModelError("this checkpoint declares its own code (auto_map); steth-hub runs none without opt-in",
                         path=config_file, fix="use family: moondream with trust_remote_code: true and a pinned revision")
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    kwargs = {"local_files_only": True}
    if family == "moondream":
        net = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True, revision=revision,
                                                   use_safetensors=True, **kwargs)
        processor = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True, revision=revision, **kwargs)
    elif family == "steth-llava" or config.get("model_type") == "steth_llava":
        import steth_builtin.vlm_arch  # noqa: F401 - registers steth_llava with the Auto classes

        net = AutoModelForImageTextToText.from_pretrained(str(folder), use_safetensors=True, **kwargs)
        processor = AutoTokenizer.from_pretrained(str(folder), **kwargs)
    else:
        net = AutoModelForImageTextToText.from_pretrained(str(folder), use_safetensors=True, **kwargs)
        processor = AutoProcessor.from_pretrained(str(folder), **kwargs)
    net.eval()
    return net, processor


def _untie_embeddings(net) -> bool:
    """Give the output layer its own copy of tied input embeddings (SmolVLM, PaliGemma, Qwen2-VL tie them).

    The Trainer loop checkpoints the wrapped network with safetensors, which refuses tensors that share
    memory. The copy starts equal (LoRA leaves both frozen, so they stay equal); the config then says
    untied, so save_pretrained writes both and loading reads both."""
    import torch

    try:
        inp, out = net.get_input_embeddings(), net.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return False
    if inp is None or out is None or out.weight.data_ptr() != inp.weight.data_ptr():
        return False
    out.weight = torch.nn.Parameter(inp.weight.detach().clone(), requires_grad=inp.weight.requires_grad)
    for config in (net.config, getattr(net.config, "text_config", None)):
        if config is not None and hasattr(config, "tie_word_embeddings"):
            config.tie_word_embeddings = False
    return True


def _with_lora(net, settings: Mapping, family: str):
    """The model with LoRA adapters (peft) on its language model's attention projections."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ConfigError("model.finetune: lora needs peft", fix="pip install 'steth-hub[vlm]' (peft), or set "
                                                                 "finetune: none") from exc
    targets = settings.get("target_modules") or ["q_proj", "k_proj", "v_proj", "o_proj"]
    config = LoraConfig(r=int(settings.get("r", 8)), lora_alpha=int(settings.get("alpha", 16)),
                        lora_dropout=float(settings.get("dropout", 0.0)), target_modules=list(targets), bias="none")
    return get_peft_model(net, config)


def _corpus_clip_facts(corpus_path, preset) -> dict:
    """``{sha1 of a clip's samples: PromptFacts}`` for every clip of a corpus under ``preset``."""
    from steth_hub.corpus import load_corpus
    from steth_hub.preprocess import cached_clips

    corpus = load_corpus(corpus_path)
    clips, _, _ = cached_clips(corpus, preset, progress=False)
    columns = [c for c in ("recording_id", "sex", "age", "site") if c in corpus.dataset.column_names]
    table = corpus.dataset.select_columns(columns).to_dict()
    by_recording = {rid: facts_from_row({c: table[c][i] for c in columns if c != "recording_id"})
                    for i, rid in enumerate(table["recording_id"])}
    return {_sha(w): by_recording.get(str(r), PromptFacts()) for w, r in zip(clips.waveforms, clips.recording_ids)}


# ---------------------------------------------------------------------- native transformers VLMs
def _pil(image) -> Any:
    """A ``[3, mels, frames]`` image in [0, 1] -> an RGB PIL image, low frequencies at the bottom."""
    from PIL import Image

    array = (image.detach().float().cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array[:, ::-1, :].transpose(1, 2, 0)), mode="RGB")


def _native_text(processor, prompt: str) -> str:
    """The processor's chat format with one image and the prompt, ready for the answer."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    token = getattr(processor, "image_token", None)  # Llava, PaliGemma...: expanded by the processor
    return (token or "") + prompt + "\nAnswer:"


def _native_inputs(processor, image, prompt: str):
    return processor(images=[_pil(image)], text=[_native_text(processor, prompt)], return_tensors="pt")


def _tokenizer_of(processor):
    return getattr(processor, "tokenizer", processor)


def _answer_ids(tokenizer, text: str, prompt_text: str) -> list[int]:
    sep = "" if prompt_text.endswith((" ", "\n")) else " "
    ids = tokenizer(sep + text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = list(ids) + [int(tokenizer.eos_token_id)]
    return list(ids)


def _sequence_logprobs(logits, input_ids, starts, ends, mean: bool = False):
    """Sum (or mean) of log p(token) over positions [start, end) of each row."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for r in range(input_ids.shape[0]):
        s, e = starts[r], ends[r]
        tok = input_ids[r, s:e]
        value = logp[r, s - 1:e - 1].gather(-1, tok[:, None])
        out.append(value.mean() if mean else value.sum())
    return torch.stack(out)


def _score_native(model: VLMClassifier, net, features, prompts):
    import torch

    processor = model.processor
    tokenizer = _tokenizer_of(processor)
    device = next(net.parameters()).device
    rows = []
    for image, prompt in zip(features, prompts):
        enc = _native_inputs(processor, image, prompt)
        text = _native_text(processor, prompt)
        prompt_ids = enc["input_ids"][0]
        cands = [_answer_ids(tokenizer, model.answers[label], text) for label in ("not_asthma", "asthma")]
        length = len(prompt_ids) + max(len(c) for c in cands)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.full((2, length), int(pad), dtype=torch.long)
        mask = torch.zeros((2, length), dtype=torch.long)
        starts, ends = [], []
        for k, c in enumerate(cands):
            seq = torch.cat([prompt_ids, torch.tensor(c, dtype=torch.long)])
            ids[k, :len(seq)] = seq
            mask[k, :len(seq)] = 1
            starts.append(len(prompt_ids))
            ends.append(len(seq))
        extra = {}
        for name, value in enc.items():
            if name in ("input_ids", "attention_mask"):
                continue
            if torch.is_tensor(value) and value.dim() == 2 and value.shape[1] == len(prompt_ids):
                grown = torch.ones((2, length), dtype=value.dtype)  # e.g. token_type_ids: the answer is suffix
                grown[:, :len(prompt_ids)] = value[0]
                extra[name] = grown.to(device)
            elif torch.is_tensor(value):
                extra[name] = torch.cat([value, value]).to(device) if value.shape[0] == 1 else value.to(device)
            else:
                extra[name] = value
        out = net(input_ids=ids.to(device), attention_mask=mask.to(device), **extra)
        rows.append(_sequence_logprobs(out.logits, ids.to(device), starts, ends, model._mean))
    return torch.stack(rows)


def _generate_native(model: VLMClassifier, image, prompt: str, n_new: int) -> str:
    processor = model.processor
    device = next(model.net.parameters()).device
    enc = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in _native_inputs(processor, image, prompt).items()}
    out = model.net.generate(**enc, max_new_tokens=n_new, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:]
    return _tokenizer_of(processor).decode(new, skip_special_tokens=True).strip()


# ---------------------------------------------------------------------- Moondream (remote code, 2024 interface)
MOONDREAM_TEMPLATE = "<image>\n\nQuestion: {prompt}\n\nAnswer:"


def _moondream_parts(net):
    for name in ("encode_image", "input_embeds", "text_model"):
        if not hasattr(net, name):
            raise ModelError(f"this Moondream revision has no {name!r}: log-likelihood scoring needs the 2024 "
                             "interface (encode_image, input_embeds, text_model)",
                             fix="pin a moondream2 revision with that interface, or use a native VLM")


def _score_moondream(model: VLMClassifier, net, features, prompts):
    import torch

    _moondream_parts(net)
    tokenizer = model.processor
    rows = []
    for image, prompt in zip(features, prompts):
        image_embeds = net.encode_image(_pil(image))
        question = MOONDREAM_TEMPLATE.format(prompt=prompt)
        scores = []
        for label in ("not_asthma", "asthma"):
            ids = _answer_ids(tokenizer, model.answers[label], question)
            prefix = net.input_embeds(question, image_embeds, tokenizer)
            answer = net.text_model.get_input_embeddings()(torch.tensor([ids], device=prefix.device))
            embeds = torch.cat([prefix, answer], dim=1)
            logits = net.text_model(inputs_embeds=embeds).logits
            start = prefix.shape[1]
            logp = torch.log_softmax(logits[0, start - 1:-1].float(), dim=-1)
            value = logp.gather(-1, torch.tensor(ids, device=logp.device)[:, None])
            scores.append(value.mean() if model._mean else value.sum())
        rows.append(torch.stack(scores))
    return torch.stack(rows)


def _generate_moondream(model: VLMClassifier, image, prompt: str, n_new: int) -> str:
    net = model.net
    picture = _pil(image)
    if hasattr(net, "answer_question"):
        return str(net.answer_question(net.encode_image(picture), prompt, model.processor,
                                       max_new_tokens=n_new)).strip()
    if hasattr(net, "query"):
        return str(net.query(picture, prompt)["answer"]).strip()
    raise ModelError("this Moondream revision has neither answer_question nor query", fix="pin another revision")


# ---------------------------------------------------------------------- steth-llava (the embedded family)
def _llava_ids(model: VLMClassifier, prompt: str) -> list[int]:
    tokenizer = model.processor
    n_image = int(model.net.config.n_image_tokens) if hasattr(model.net, "config") else 16
    words = tokenizer(prompt + " answer :", add_special_tokens=False)["input_ids"]
    return [int(tokenizer.bos_token_id)] + [int(model.net.config.image_token_id)] * n_image + list(words)


def _score_steth_llava(model: VLMClassifier, net, features, prompts):
    import torch

    tokenizer = model.processor
    device = next(net.parameters()).device
    image_embeds = net.image_tokens(features.to(device))
    answers = [_answer_ids(tokenizer, model.answers[label], "x ") for label in ("not_asthma", "asthma")]
    rows, starts, ends, owners = [], [], [], []
    for i, prompt in enumerate(prompts):
        base = _llava_ids(model, prompt)
        for ans in answers:
            rows.append(base + ans)
            starts.append(len(base))
            ends.append(len(base) + len(ans))
            owners.append(i)
    length = max(len(r) for r in rows)
    pad = int(tokenizer.pad_token_id or 0)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for r, seq in enumerate(rows):
        ids[r, :len(seq)] = torch.tensor(seq)
        mask[r, :len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    embeds = net.merge(ids, image_embeds=image_embeds[owners])
    out = net(inputs_embeds=embeds, attention_mask=mask)
    scores = _sequence_logprobs(out.logits, ids, starts, ends, model._mean)
    return scores.view(len(prompts), 2)


def _generate_steth_llava(model: VLMClassifier, image, prompt: str, n_new: int) -> str:
    import torch

    tokenizer = model.processor
    net = model.net
    device = next(net.parameters()).device
    ids = torch.tensor([_llava_ids(model, prompt)], device=device)
    out = net.generate(input_ids=ids, pixel_values=image[None].to(device), attention_mask=torch.ones_like(ids),
                       max_new_tokens=n_new, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


def _caption_warmup(model: VLMClassifier, train, epochs: int, *, seed: int) -> None:
    """Teach the language model to write the right answer after the prompt (teacher forcing, the image
    tokens of the untouched tower): before the ranking loss, so free generation ends in an answer."""
    import torch

    from steth_hub.feature_cache import cached_features

    net = model.net
    tokenizer = model.processor
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.eval()
        images = torch.cat([cached_features(model, train.waveforms[i:i + 32], train.sample_rate)
                            for i in range(0, len(train), 32)])
        embeds = torch.cat([net.image_tokens(images[i:i + 32]) for i in range(0, len(images), 32)])
    prompts = model.prompts_for_features(images)
    params = [p for n, p in net.named_parameters() if not n.startswith("vision_tower")]
    optimiser = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)
    labels = np.asarray(train.labels)
    net.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(images), generator=gen).tolist()
        for start in range(0, len(order), 16):
            idx = order[start:start + 16]
            seqs = []
            for i in idx:
                base = _llava_ids(model, prompts[i])
                answer = _answer_ids(tokenizer, model.answers["asthma" if labels[i] == 1 else "not_asthma"], "x ")
                seqs.append((base, answer))
            length = max(len(b) + len(a) for b, a in seqs)
            ids = torch.full((len(seqs), length), int(tokenizer.pad_token_id or 0), dtype=torch.long)
            target = torch.full((len(seqs), length), -100, dtype=torch.long)
            mask = torch.zeros((len(seqs), length), dtype=torch.long)
            for r, (b, a) in enumerate(seqs):
                ids[r, :len(b) + len(a)] = torch.tensor(b + a)
                target[r, len(b):len(b) + len(a)] = torch.tensor(a)
                mask[r, :len(b) + len(a)] = 1
            out = net(inputs_embeds=net.merge(ids, image_embeds=embeds[idx]), attention_mask=mask, labels=target)
            optimiser.zero_grad()
            out.loss.backward()
            optimiser.step()
    net.eval()


#: EfficientAT, credited in the card of every steth-llava model whose tower started from its weights
EFFICIENTAT_ATTRIBUTION = ("EfficientAT MobileNetV3 pretrained on AudioSet (Schmid, Koutini, Widmer, ICASSP 2023; "
                           "github.com/fschmid56/EfficientAT; MIT licence, Copyright (c) 2022 Florian Schmid)")


def steth_llava_parts(build: Mapping, net) -> dict:
    """What a steth-llava model is made of and where each part comes from (for its card)."""
    text = net.config.text_config
    pretrained = bool(build.get("encoder_weights"))
    grid = net.config.image_grid
    return {
        "architecture": (f"steth-llava: EfficientAT MobileNetV3 (width {net.config.width_mult}) vision tower -> "
                         f"{grid[0]}x{grid[1]} pooled cells -> 2-layer MLP projector -> {grid[0] * grid[1]} image "
                         f"tokens in a {text.num_hidden_layers}-layer Llama (hidden {text.hidden_size}, vocabulary "
                         f"{text.vocab_size} words)"),
        "parts": {
            "vision tower": ("EfficientAT mn04 initialised from its AudioSet-pretrained weights (first convolution "
                             "spread over the 3 window channels), every layer fine-tuned here on the shared KAUH + "
                             "ICBHI recordings" if pretrained else "EfficientAT layout, random initialisation, "
                             "trained here"),
            "projector": "trained here from random initialisation",
            "language model": ("a tiny Llama (transformers) trained here from random initialisation on the paper's "
                               "prompt JSON and the answers 'asthma' / 'not asthma'; no pretrained language model"),
            "tokenizer": "a fixed word list of the prompt JSON (steth_builtin/vlm_tokenizer.py), not learnt from data",
        },
        "attribution": EFFICIENTAT_ATTRIBUTION if pretrained else None,
    }


def build_steth_llava(build: Mapping):
    """A fresh steth-llava model and its word-level tokenizer from ``model.build``.

    ``encoder_weights``: EfficientAT's published safetensors (its 1-channel first kernel is spread
    over the 3 window channels, divided by 3; the AudioSet head is not used); without it the tower
    starts random.
    """
    import torch
    from transformers import LlamaConfig

    from steth_builtin.vlm_arch import StethLlavaConfig, StethLlavaForConditionalGeneration
    from steth_builtin.vlm_tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=int(build.get("hidden_size", 64)),
                       intermediate_size=int(build.get("intermediate_size", 128)),
                       num_hidden_layers=int(build.get("layers", 2)), num_attention_heads=int(build.get("heads", 4)),
                       num_key_value_heads=int(build.get("heads", 4)), max_position_embeddings=256,
                       tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = StethLlavaConfig(text_config=text, width_mult=float(build.get("width_mult", 0.4)),
                              image_grid=tuple(build.get("image_grid", (2, 8))),
                              image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    net = StethLlavaForConditionalGeneration(config)
    if build.get("encoder_weights"):
        from steth_builtin.efficientat_net import read_safetensors

        path = Path(build["encoder_weights"]).expanduser()
        state = {k[len("features."):]: v for k, v in read_safetensors(path).items() if k.startswith("features.")}
        first = "0.0.weight"
        if first in state and state[first].shape[1] == 1:
            state[first] = state[first].repeat(1, config.in_channels, 1, 1) / config.in_channels
        missing, unexpected = net.vision_tower.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(f"encoder weights do not fit the vision tower ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected)", path=path,
                             fix="give EfficientAT's mn04 safetensors with model.build.width_mult 0.4")
    with torch.no_grad():
        net.eval()
    return net, tokenizer
