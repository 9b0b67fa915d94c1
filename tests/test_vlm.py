"""The ``vlm`` classifier (issue 17): prompts, a tiny native VLM and a Moondream-style remote-code stub.

Everything runs offline on real recordings (the shipped examples, the shared KAUH names) with tiny
models built here: a Llava with a CLIP vision tower and a Llama language model, and a stub
"Moondream" whose code lives in a local folder and is run only with trust_remote_code and a pinned
revision. The embedded steth/vlm-asthma is tested in tests/test_vlm_embedded.py.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from steth_builtin.vlm_prompt import (FACT_FIELDS, PROMPT_FIELDS, PromptFacts, build_prompt, describe_site,
                                      facts_from_row, make_facts, parse_answer)
from steth_hub.errors import ConfigError, ModelError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REVISION = "0123456789abcdef0123456789abcdef01234567"


# ---------------------------------------------------------------------------- the prompt
def test_prompt_is_the_papers_json_and_unknown_facts_are_left_out():
    prompt, omitted = build_prompt(make_facts(sex="m", age=9.0, site="P L L"))
    assert json.loads(prompt) == {
        "task": "Write a diagnosis for this patient by analyzing the respiratory sound spectrogram.",
        "patient_sex": "M", "patient_age": 9, "record_point": "posterior left lower",
        "spectrogram_bins_width": "[0.025, 0.1, 0.175]"}
    assert omitted == []
    prompt, omitted = build_prompt(make_facts(age=45.5), fields=["patient_age", "patient_sex"])
    assert json.loads(prompt) == {"task": json.loads(prompt)["task"], "patient_age": 45.5}
    assert omitted == ["patient_sex"]
    with pytest.raises(ConfigError, match="model.prompt_fields: unknown field.*annotation"):
        build_prompt(PromptFacts(), fields=["patient_age", "annotation"])


def test_prompts_never_hold_the_clinicians_annotation_or_diagnosis(shared_data):
    """Every shared KAUH name: the prompt depends on sex, age and site only; changing the sound type,
    diagnosis or label never changes it, and the annotation text never appears in it."""
    from steth_hub.corpus.kauh import parse_kauh_name

    names = sorted(p.name for p in (shared_data / "kauh").glob("*.wav"))
    assert len(names) > 200
    seen_annotations = set()
    for name in names:
        row = parse_kauh_name(name)
        row["label"] = int("asthma" in row["diagnosis"].lower())
        prompt, _ = build_prompt(facts_from_row(row))
        tampered = dict(row, annotation="I C", diagnosis="COPD", label=1 - row["label"])
        assert build_prompt(facts_from_row(tampered))[0] == prompt, name
        values = json.loads(prompt)
        assert set(values) <= {"task", *PROMPT_FIELDS}
        seen_annotations.add(row["annotation"])
        for field in FACT_FIELDS:
            assert row["annotation"] is None or str(values.get(field, "")).upper() != row["annotation"].upper()
        assert "wheez" not in prompt.lower() and "crep" not in prompt.lower()
        for planted in ("E W", "I C", "Crep", "Bronchial"):
            assert planted not in prompt, (name, planted)
    assert {"E W", "N"} <= seen_annotations  # the check ran on annotated recordings


@pytest.mark.parametrize("text, label", [
    ("asthma", "asthma"), ("Not asthma.", "not_asthma"), ("Diagnosis: ASTHMA", "asthma"),
    ("no signs of asthma", "not_asthma"), ("The patient is healthy", "not_asthma"),
    ("non-asthmatic, normal breath sounds", "not_asthma"), ("asthma is ruled out", "asthma"),
    ("", None), ("3ntYb 02sp", None), ("bronchial asthma, expiratory wheeze", "asthma"),
])
def test_free_text_is_parsed_to_a_label(text, label):
    assert parse_answer(text) == label


def test_configured_answer_strings_are_parsed_first():
    answers = {"not_asthma": "healthy lungs", "asthma": "asthmatic"}
    assert parse_answer("Healthy lungs.", answers) == "not_asthma"
    assert parse_answer("asthmatic", answers) == "asthma"


@pytest.mark.parametrize("config, field", [
    ({"family": "moondream", "path": "x", "revision": REVISION}, "model.trust_remote_code"),
    ({"family": "moondream", "path": "x", "trust_remote_code": True}, "model.revision"),
    ({"family": "moondream", "path": "x", "trust_remote_code": "yes", "revision": REVISION},
     "model.trust_remote_code"),
    ({"family": "moondream", "path": "x", "trust_remote_code": True, "revision": REVISION, "finetune": "lora"},
     "model.finetune"),
    ({"family": "native"}, "model.path"),
    ({"family": "llava-ish", "path": "x"}, "model.family"),
    ({"family": "native", "path": "x", "prompt_fields": ["sound_type"]}, "model.prompt_fields"),
    ({"family": "native", "path": "x", "answers": {"asthma": "yes"}}, "model.answers"),
    ({"family": "native", "path": "x", "score": "max"}, "model.score"),
    ({"family": "native", "path": "x", "lora": {"rank": 4}}, "model.lora"),
])
def test_bad_configs_are_one_line_errors_naming_the_field(config, field):
    from steth_builtin.vlm_model import VLMClassifier

    with pytest.raises(ConfigError) as info:
        VLMClassifier.from_config(config)
    text = str(info.value)
    assert field in text and "\n" not in text.strip()


# ---------------------------------------------------------------------------- a tiny native VLM (Llava)
def _tokenizer(image_token: str | None = None):
    """A byte-level BPE tokenizer trained here on the prompts and answers (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [build_prompt(make_facts(s, a, site))[0] for s in "MF" for a in (9, 45) for site in ("P L L", "Ar")]
    texts += ["Answer: asthma", "Answer: not asthma", "Question:"] * 3
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<unk>", "<s>", "</s>", *([image_token] if image_token else [])],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    extra = {"extra_special_tokens": {"image_token": image_token}} if image_token else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", **extra)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    folder = tmp_path_factory.mktemp("tiny-llava")
    tokenizer = _tokenizer("<image>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=32, patch_size=8, projection_dim=32),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                                pad_token_id=0, bos_token_id=2, eos_token_id=3),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1, pad_token_id=0)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    # num_additional_image_tokens=1: CLIP's class token (../shared/NOTES.md: otherwise tokens and features mismatch)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                   tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1, image_token="<image>").save_pretrained(folder)
    return folder


def test_native_vlm_load_prompt_score_generate_lora_and_reload(tiny_llava, example_clipset, tmp_path):
    from steth_builtin.vlm_model import VLMClassifier
    from steth_hub.classifier import load_classifier

    model = VLMClassifier.from_config({"family": "native", "path": str(tiny_llava), "lora": {"r": 4, "alpha": 16, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"]}})
    clips = example_clipset
    # prompt: the patient's facts in; a fact not known is left out and said so
    with model.patient_facts(sex="M", age=38, site="P R M"):
        report = model.prompt_report(clips.waveforms[:1])[0]
    assert json.loads(report["prompt"])["record_point"] == "posterior right middle" and report["omitted"] == []
    model.register_clips(clips.waveforms[:3], {"sex": "F", "age": None, "site": None})
    report = model.prompt_report(clips.waveforms[:1])[0]
    assert json.loads(report["prompt"])["patient_sex"] == "F"
    assert report["omitted"] == ["patient_age", "record_point"]
    # score: a probability per clip from the two answers' log-likelihoods
    before = model.predict_proba(clips.waveforms)
    assert before.shape == (len(clips),) and np.isfinite(before).all() and ((0 < before) & (before < 1)).all()
    logits = model.logits(model.net, model.featurise(clips.waveforms[:2], clips.sample_rate))
    assert logits.shape == (2, 2) and (logits < 0).all()  # log-likelihoods
    # the facts change the prompt, and so the score
    with model.patient_facts(sex="M", age=80, site="Tc"):
        other = model.predict_proba(clips.waveforms[3:6])
    assert not np.allclose(other, before[3:6])
    # generate: free text, parsed robustly (a random model writes no label: None, never a guess)
    answer = model.generate_text(clips.waveforms[:1], max_new_tokens=4)[0]
    assert isinstance(answer["text"], str) and answer["label"] in (None, "asthma", "not_asthma")
    # LoRA fine-tuning through the Trainer loop changes the scores, towards the labels
    history = model.fit(clips, None, {"num_train_epochs": 3, "per_device_train_batch_size": 6,
                                      "gradient_accumulation_steps": 1, "learning_rate": 5e-2, "logging_steps": 1,
                                      "save_steps": 1000, "warmup_steps": 0, "disable_tqdm": True}, tmp_path / "run")
    after = model.predict_proba(clips.waveforms)
    assert history["global_step"] > 0 and np.abs(after - before).max() > 1e-3
    gap = lambda p: p[clips.labels == 1].mean() - p[clips.labels == 0].mean()  # noqa: E731
    assert gap(after) > gap(before)
    assert not hasattr(model.net, "peft_config")  # adapters merged into the saved weights
    model.save_pretrained(tmp_path / "model")
    assert not list((tmp_path / "model").glob("*.bin"))
    loaded = load_classifier(tmp_path / "model")
    loaded.register_clips(clips.waveforms[:3], {"sex": "F", "age": None, "site": None})  # facts are not saved
    np.testing.assert_allclose(loaded.predict_proba(clips.waveforms), after, atol=1e-5)
    assert loaded.fields == model.fields and loaded.settings["score"] == "mean"


# ---------------------------------------------------------------------------- a Moondream-style remote-code stub
STUB_CODE = textwrap.dedent('''
    """A tiny stand-in for Moondream2's 2024 remote code: encode_image, input_embeds, text_model, answer_question."""
    import os
    import pathlib

    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel

    if os.environ.get("STUB_MARKER"):  # lets the test see whether this code ever ran
        pathlib.Path(os.environ["STUB_MARKER"]).touch()


    class StubConfig(PretrainedConfig):
        model_type = "md-stub"

        def __init__(self, vocab_size=300, hidden_size=32, **kwargs):
            self.vocab_size, self.hidden_size = vocab_size, hidden_size
            super().__init__(**kwargs)


    class StubVLM(PreTrainedModel):
        config_class = StubConfig

        def __init__(self, config):
            super().__init__(config)
            self.vision = torch.nn.Linear(48, 4 * config.hidden_size)
            self.text_model = LlamaForCausalLM(LlamaConfig(
                vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, pad_token_id=0,
                bos_token_id=2, eos_token_id=3))
            self.post_init()

        def encode_image(self, image):
            x = torch.tensor(np.asarray(image.resize((4, 4)), dtype=np.float32) / 255.0).flatten()[None]
            return self.vision(x).view(1, 4, -1)

        def input_embeds(self, prompt, image_embeds, tokenizer):
            before, after = prompt.split("<image>")
            embed = self.text_model.get_input_embeddings()
            ids = lambda t: torch.tensor([tokenizer(t, add_special_tokens=False)["input_ids"]], dtype=torch.long)
            parts = [embed(torch.tensor([[tokenizer.bos_token_id]])), image_embeds, embed(ids(after))]
            if before:
                parts.insert(1, embed(ids(before)))
            return torch.cat(parts, dim=1)

        def answer_question(self, image_embeds, question, tokenizer, max_new_tokens=8, **kwargs):
            embeds = self.input_embeds(f"<image>\\n\\nQuestion: {question}\\n\\nAnswer:", image_embeds, tokenizer)
            out = self.text_model.generate(inputs_embeds=embeds, max_new_tokens=max_new_tokens, do_sample=False,
                                           pad_token_id=0, eos_token_id=3)
            return tokenizer.decode(out[0], skip_special_tokens=True)
''')


def _stub_folder(root: Path, model_type: str) -> Path:
    """A local folder like a Moondream repo: its own modeling file, auto_map, weights, tokenizer."""
    import importlib.util

    import torch

    folder = root / model_type
    folder.mkdir()
    (folder / "stub_vlm.py").write_text(STUB_CODE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("stub_builder", folder / "stub_vlm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = _tokenizer()
    torch.manual_seed(1)
    module.StubVLM(module.StubConfig(vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, architectures=["StubVLM"],
                  auto_map={"AutoConfig": "stub_vlm.StubConfig", "AutoModelForCausalLM": "stub_vlm.StubVLM"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_moondream_style_remote_code_runs_only_with_opt_in_and_a_pinned_revision(tmp_path, example_clipset,
                                                                                  monkeypatch):
    from steth_builtin.vlm_model import VLMClassifier

    folder = _stub_folder(tmp_path, "md-stub")  # Moondream's interface, not its name
    monkeypatch.setenv("STUB_MARKER", str(folder / "IMPORTED"))
    base = {"family": "moondream", "path": str(folder)}
    for config in (base, dict(base, trust_remote_code=True), dict(base, trust_remote_code=True, revision="main")):
        with pytest.raises(ConfigError):
            VLMClassifier.from_config(config)
    assert not (folder / "IMPORTED").exists()  # refused before any of its code ran
    # a native family never runs a checkpoint's own code either
    with pytest.raises(ModelError, match="auto_map"):
        VLMClassifier.from_config({"family": "native", "path": str(folder)})
    # opted in, at a pinned revision: load -> prompt -> score -> generate
    model = VLMClassifier.from_config(dict(base, trust_remote_code=True, revision=REVISION))
    assert (folder / "IMPORTED").exists()
    clips = example_clipset.waveforms[:3]
    with model.patient_facts(sex="F", age=24, site="P R U"):
        assert json.loads(model.prompt_report(clips[:1])[0]["prompt"])["patient_age"] == 24
        p = model.predict_proba(clips)
        answer = model.generate_text(clips[:1], max_new_tokens=4)[0]
    assert p.shape == (3,) and ((0 < p) & (p < 1)).all()
    assert isinstance(answer["text"], str) and answer["label"] in (None, "asthma", "not_asthma")
    with pytest.raises(ModelError, match="not saved"):
        model.save_pretrained(tmp_path / "saved")


def test_a_real_moondream_checkpoint_is_refused_on_transformers_5_before_its_code_runs(tmp_path, monkeypatch):
    from steth_builtin.vlm_model import VLMClassifier, transformers_major

    folder = _stub_folder(tmp_path, "moondream1")  # the model_type Moondream2's config declares
    monkeypatch.setenv("STUB_MARKER", str(folder / "IMPORTED"))
    config = {"family": "moondream", "path": str(folder), "trust_remote_code": True, "revision": REVISION}
    if transformers_major() < 5:
        pytest.skip("transformers<5 is installed: Moondream's code would be allowed")
    with pytest.raises(ModelError, match=r"needs transformers<5 \(installed: 5\.") as info:
        VLMClassifier.from_config(config)
    assert "\n" not in str(info.value).strip()
    assert not (folder / "IMPORTED").exists()


def test_fitting_clips_get_their_own_patients_facts_from_the_corpus_and_nothing_else(examples_dir, tmp_path):
    """A corpus of the shipped KAUH examples: every clip is matched to its recording's sex, age and site
    (held-out clips too: the whole corpus is registered), and the annotation column never reaches a prompt."""
    from steth_builtin.vlm_model import VLMClassifier
    from steth_hub.corpus import import_corpus, load_corpus
    from steth_hub.preprocess import cached_clips

    import_corpus("kauh", examples_dir / "kauh", tmp_path / "corpus", n_folds=2, progress=False)
    corpus = load_corpus(tmp_path / "corpus")
    clips, _, _ = cached_clips(corpus, "excerpt-10s", progress=False)
    rows = corpus.dataset.select_columns(["recording_id", "sex", "age", "site", "annotation"]).to_dict()
    assert {"E W", "N"} <= set(rows["annotation"])
    model = VLMClassifier(family="native")
    held_out = clips.for_patients([clips.patient_ids[0]])
    assert model.learn_corpus_facts(clips.for_patients(sorted(set(clips.patient_ids))[1:])) == 1.0
    for i, rid in enumerate(rows["recording_id"]):
        mine = clips.subset(clips.recording_ids == rid)
        for entry in model.prompt_report(mine.waveforms):
            values = json.loads(entry["prompt"])
            assert values["patient_sex"] == rows["sex"][i] and values["patient_age"] == int(rows["age"][i])
            assert values["record_point"] == describe_site(rows["site"][i]) and entry["omitted"] == []
            assert rows["annotation"][i] not in values.values()
    assert all(not r["omitted"] for r in model.prompt_report(held_out.waveforms))


def test_a_paligemma_with_tied_embeddings_scores_fine_tunes_and_reloads(example_clipset, tmp_path):
    """PaliGemma (Gemma ties its input and output embeddings, as SmolVLM and Qwen2-VL do): the Trainer's
    safetensors checkpoints refuse shared tensors, so the plugin unties them before training."""
    import torch
    from transformers import (GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                              SiglipImageProcessor, SiglipVisionConfig)

    from steth_builtin.vlm_model import VLMClassifier
    from steth_hub.classifier import load_classifier

    tokenizer = _tokenizer("<image>")
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=32, patch_size=8),
        text_config=GemmaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=0,
                                bos_token_id=2, eos_token_id=3),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), projection_dim=32, hidden_size=32, pad_token_id=0)
    torch.manual_seed(0)
    folder = tmp_path / "tiny-paligemma"
    PaliGemmaForConditionalGeneration(config).save_pretrained(folder)
    PaliGemmaProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}, image_seq_length=16),
                       tokenizer=tokenizer).save_pretrained(folder)
    model = VLMClassifier.from_config({"family": "native", "path": str(folder),
                                       "lora": {"r": 4, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}})
    clips = example_clipset.subset(np.arange(6))
    before = model.predict_proba(clips.waveforms)
    assert ((0 < before) & (before < 1)).all()
    assert isinstance(model.generate_text(clips.waveforms[:1], max_new_tokens=3)[0]["text"], str)
    history = model.fit(clips, None, {"num_train_epochs": 1, "per_device_train_batch_size": 3, "learning_rate": 5e-2,
                                      "gradient_accumulation_steps": 1,
                                      "save_steps": 1, "warmup_steps": 0, "disable_tqdm": True}, tmp_path / "run")
    assert history["global_step"] == 2 and list((tmp_path / "run").glob("checkpoint-*/*.safetensors"))
    after = model.predict_proba(clips.waveforms)
    model.save_pretrained(tmp_path / "model")
    np.testing.assert_allclose(load_classifier(tmp_path / "model").predict_proba(clips.waveforms), after, atol=1e-5)
