"""The embedded VLM steth/vlm-asthma: screened offline, loaded by plain transformers, honest about its parts.

It is a steth-llava model (steth_builtin/vlm_arch.py) trained here; these tests screen the shipped
example recordings with it, through the Python API and ``steth screen``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAME = "steth/vlm-asthma"


@pytest.fixture(scope="module")
def vlm():
    import steth_hub

    return steth_hub.from_pretrained(NAME)


def test_embedded_vlm_screens_offline_with_the_patients_facts(vlm, examples_dir):
    import steth_hub

    assert vlm.plugin_name == "vlm" and vlm.family == "steth-llava"
    path = next((examples_dir / "kauh").glob("EP38_*.wav"))
    bare = steth_hub.screen(str(path), model=vlm)
    assert 0.0 <= bare.probability <= 1.0 and bare.n_clips == 3
    from steth_builtin.vlm_screen import register_facts

    entry = register_facts(vlm, path, sex="M", age=38)  # the site comes from the name's site field only
    assert entry["omitted"] == [] and json.loads(entry["prompt"])["record_point"] == "posterior right middle"
    assert "E W" not in entry["prompt"] and "sthma" not in entry["prompt"]  # the name's annotation and diagnosis
    with_facts = steth_hub.screen(str(path), model=vlm)
    assert with_facts.probability != pytest.approx(bare.probability, abs=1e-6)  # the facts are read


def test_plain_transformers_loads_the_embedded_vlm(vlm):
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    import steth_builtin.vlm_arch  # noqa: F401 - registers steth_llava with the Auto classes
    from steth_hub.hub import EMBEDDED

    folder = EMBEDDED[NAME]
    net = AutoModelForImageTextToText.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(net).__name__ == "StethLlavaForConditionalGeneration"
    assert tokenizer.convert_tokens_to_ids("<image>") == net.config.image_token_id
    ids = tokenizer("asthma", add_special_tokens=False)["input_ids"]
    x = torch.zeros(1, 3, vlm.front_end().n_mels, 126)
    prompt = [tokenizer.bos_token_id] + [net.config.image_token_id] * net.config.n_image_tokens + ids
    with torch.no_grad():
        a = net(input_ids=torch.tensor([prompt]), pixel_values=x).logits
        b = vlm.net(input_ids=torch.tensor([prompt]), pixel_values=x).logits
    torch.testing.assert_close(a, b)


def test_no_frozen_copy_of_the_distributed_encoder_ships():
    """Every tensor of the shipped tower differs from EfficientAT's distributed tensor of the same name."""
    from safetensors.numpy import load_file

    from pathlib import Path

    from steth_hub.hub import EMBEDDED

    source = Path(__file__).resolve().parents[2] / "shared" / "models" / "efficientat-mn04-as" / "model.safetensors"
    if not source.is_file():
        pytest.skip(f"needs EfficientAT's distributed weights at {source}")
    shipped = load_file(str(EMBEDDED[NAME] / "model.safetensors"))
    original = load_file(str(source))
    tower = {k[len("vision_tower."):]: v for k, v in shipped.items() if k.startswith("vision_tower.")}
    compared = 0
    for name, value in tower.items():
        ref = original.get("features." + name)
        if ref is None or ref.shape != value.shape or name.endswith("num_batches_tracked"):
            continue
        compared += 1
        assert not np.array_equal(ref, value), name
    assert compared > 100
    assert not any(k.startswith("classifier") for k in shipped)  # the AudioSet head is not shipped


def test_card_states_parts_and_origins():
    from steth_hub.hub import EMBEDDED

    folder = EMBEDDED[NAME]
    card = (folder / "README.md").read_text(encoding="utf-8")
    for phrase in ("EfficientAT", "MIT", "trained here", "Llama", "not a diagnosis"):
        assert phrase.lower() in card.lower(), phrase
    assert (folder / "LICENSE-pretrained").is_file()
    meta = json.loads((folder / "steth.json").read_text())
    assert meta["vlm"]["prompt_fields"] == ["patient_sex", "patient_age", "record_point", "spectrogram_bins_width"]
    assert meta["evaluation"]["protocol"]["folds_from"] == "recomputed"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 8 * 2**20


def test_steth_screen_explain_text_with_the_embedded_vlm(examples_dir):
    from click.testing import CliRunner

    from steth_hub.cli import main

    path = next((examples_dir / "kauh").glob("DP72_*.wav"))
    result = CliRunner().invoke(main, ["screen", "--model", NAME, "--explain-text", "--json", "--quiet",
                                       "--sex", "F", "--age", "24", str(path)])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    assert row["vlm"]["facts"] == {"sex": "F", "age": 24.0, "site": "P R U"} and row["vlm"]["omitted"] == []
    answer = row["vlm"]["answer"]
    assert isinstance(answer["text"], str) and answer["label"] in ("asthma", "not_asthma", None)
    text = CliRunner().invoke(main, ["screen", "--model", NAME, "--quiet", str(path)])
    assert text.exit_code == 0 and "left out (not known): patient_sex, patient_age" in text.output


def test_embedded_vlm_keeps_its_recorded_probabilities_on_the_examples(examples_dir):
    """Without patient facts, the shipped VLM gives the probabilities recorded when it was shipped
    (tests/data/vlm_asthma_expected.json, written by configs/record_expected.py)."""
    import hashlib
    from pathlib import Path

    import steth_hub
    from steth_hub.hub import EMBEDDED
    from steth_hub.screening import screen_many

    expected = json.loads((Path(__file__).parent / "data" / "vlm_asthma_expected.json").read_text())
    weights = (EMBEDDED[NAME] / "model.safetensors").read_bytes()
    assert expected["model_sha256"] == hashlib.sha256(weights).hexdigest(), \
        "the model changed: regenerate tests/data/vlm_asthma_expected.json (configs/record_expected.py steth/vlm-asthma)"
    model = steth_hub.from_pretrained(NAME)  # a fresh instance: no facts registered by other tests
    results, failures = screen_many(sorted(examples_dir.glob("*/*.wav")), model=model, progress=False)
    assert not failures
    got = {str(Path(r.source).relative_to(examples_dir)): r.probability for r in results}
    assert set(got) == set(expected["probabilities"])
    for name, p in expected["probabilities"].items():
        assert got[name] == pytest.approx(p, abs=1e-4), name
