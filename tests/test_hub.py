"""steth_hub.hub: loading by folder, embedded alias and repo id; publishing to a (fake) Hub; safety refusals.

Every model here is a tiny AST built by the test with the real ``ast`` plugin class, run on clips
of the real example recordings. Nothing reaches the network: the Hub is tests/fake_hub.py on
127.0.0.1, and the Hugging Face cache is a temporary folder.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fake_hub import FakeHub
from steth_hub import hub
from steth_hub.classifier import STETH_METADATA
from steth_hub.errors import ModelError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TOKEN = "hf_fake_write_token"
SAFE_FILES = {"config.json", "model.safetensors", "preprocessor_config.json", STETH_METADATA, "README.md"}


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def clips(example_wavs) -> np.ndarray:
    """One second at 16 kHz from each real example recording: ``[N, 16000]`` float32."""
    from steth_hub.audio import decode

    out = []
    for path in example_wavs:
        rec = decode(path).resampled(16000)
        out.append(rec.samples[16000:32000])
    return np.stack(out).astype(np.float32)


def make_tiny_ast(threshold: float = 0.37):
    """A tiny, randomly initialised AST built with the registered ``ast`` plugin class."""
    from transformers import ASTConfig, ASTForAudioClassification

    from steth_hub.registry import get_registry

    cls = get_registry().get("classifier", "ast").load()
    torch.manual_seed(0)
    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       patch_size=16, frequency_stride=16, time_stride=16, max_length=100, num_mel_bins=128,
                       num_labels=2, id2label={0: "not_asthma", 1: "asthma"}, label2id={"not_asthma": 0, "asthma": 1})
    net = ASTForAudioClassification(config).eval()
    training = {"experiment": "tiny-test", "epochs": 1,
                "data": {"n_patients": 7, "n_recordings": 7, "sources": {"kauh": 5, "icbhi": 2}}}
    return cls(model_config=config.to_dict(), net=net, mean=-6.5, std=4.2, sample_rate=16000,
               threshold=threshold, preset={"name": "test-1s", "steps": []}, metadata={"training": training})


@pytest.fixture
def tiny_model():
    return make_tiny_ast()


@pytest.fixture
def tiny_dir(tmp_path, tiny_model) -> Path:
    return tiny_model.save_pretrained(tmp_path / "tiny-ast")


@pytest.fixture
def fake_hub(monkeypatch):
    """The loopback fake Hub, with network allowed (to it only) for this test."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub(token=TOKEN) as server:
        yield server
    assert not server.running


def hand_made_cache(cache: Path, repo_id: str, files_from: Path, commit: str | None = None) -> str:
    """Lay ``files_from`` out as the Hugging Face cache does: refs/main + snapshots/<commit>/."""
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    org, name = repo_id.split("/")
    repo = cache / f"models--{org}--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(files_from, repo / "snapshots" / commit)
    return commit


# --------------------------------------------------------------------------- loading
def test_save_then_load_gives_identical_outputs(tiny_model, tiny_dir, clips):
    loaded = hub.from_pretrained(tiny_dir)
    assert type(loaded) is type(tiny_model)
    assert loaded.threshold == pytest.approx(0.37)
    assert loaded.preset == {"name": "test-1s", "steps": []}
    expected = tiny_model.predict_proba(clips)
    got = loaded.predict_proba(clips)
    assert got.shape == (len(clips),)
    np.testing.assert_array_equal(got, expected)
    assert len(set(np.round(got, 6))) > 1  # real, different inputs give different outputs


def test_load_by_repo_id_from_a_temporary_cache_offline(hf_cache, tiny_model, tiny_dir, clips):
    from huggingface_hub import constants

    assert constants.is_offline_mode()
    commit = hand_made_cache(hf_cache, "someone/tiny-ast", tiny_dir)
    expected = tiny_model.predict_proba(clips)
    # by name (HF_HUB_CACHE points at the temporary cache), by pinned commit, and with cache_dir given
    for kwargs in ({}, {"revision": commit}, {"cache_dir": hf_cache}):
        folder = hub.resolve("someone/tiny-ast", **kwargs)
        assert folder == hf_cache / "models--someone--tiny-ast" / "snapshots" / commit
        np.testing.assert_array_equal(hub.from_pretrained("someone/tiny-ast", **kwargs).predict_proba(clips), expected)


def test_repo_missing_from_the_cache_offline_says_how_to_get_it(hf_cache):
    with pytest.raises(ModelError) as err:
        hub.from_pretrained("someone/not-downloaded")
    text = str(err.value)
    assert "not in the Hugging Face cache" in text and "HF_HUB_OFFLINE" in text
    assert "hf download someone/not-downloaded" in text


def test_default_alias_loads_the_embedded_folder_offline_with_an_empty_cache(hf_cache, tmp_path, tiny_dir, clips,
                                                                          monkeypatch):
    assert hub.DEFAULT_MODEL == "steth/efficientat-asthma" and "steth/ast-asthma" in hub.EMBEDDED
    for name in (hub.DEFAULT_MODEL, "steth/ast-asthma"):  # every embedded name resolves the same way
        monkeypatch.setitem(hub.EMBEDDED, name, tiny_dir)
        model = hub.from_pretrained(name)
        assert model.threshold == pytest.approx(0.37)
        assert model.predict_proba(clips).shape == (len(clips),)
        assert list(hf_cache.iterdir()) == []  # nothing fetched, nothing cached
        # any revision means the Hub, which is not in the (empty) cache
        with pytest.raises(ModelError, match="not in the Hugging Face cache"):
            hub.from_pretrained(name, revision="main")
        # an installation without the embedded folder fails clearly
        monkeypatch.setitem(hub.EMBEDDED, name, tmp_path / "missing")
        with pytest.raises(ModelError, match="embedded model .* is missing"):
            hub.from_pretrained(name)


def test_shipped_default_model_works_offline(hf_cache, clips):
    folder = hub.EMBEDDED[hub.DEFAULT_MODEL]
    if not (folder / STETH_METADATA).is_file():
        pytest.skip(f"the embedded model is not trained yet ({folder} has no steth.json)")
    model = hub.from_pretrained(hub.DEFAULT_MODEL)
    prob = model.predict_proba(clips[:, :model.sample_rate] if model.sample_rate == 16000 else clips)
    assert np.all((prob >= 0) & (prob <= 1))
    assert list(hf_cache.iterdir()) == []


def test_bad_names_give_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        hub.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="model folder not found"):
        hub.from_pretrained("./relative/nowhere")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"0")
    with pytest.raises(ModelError, match="not a file"):
        hub.from_pretrained(weights)
    with pytest.raises(ModelError, match="neither a model folder nor a valid Hub repo id"):
        hub.from_pretrained("bad repo id!")


def test_missing_plugin_names_the_distribution_to_install(tiny_dir):
    meta = json.loads((tiny_dir / STETH_METADATA).read_text())
    meta.update(plugin="whisper-asthma", distribution="steth-whisper")
    (tiny_dir / STETH_METADATA).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"pip install steth-whisper"):
        hub.from_pretrained(tiny_dir)


# --------------------------------------------------------------------------- safety
def test_pickle_checkpoints_are_refused(tmp_path, tiny_dir, hf_cache):
    import pickle

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dir, pickled)
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelError, match="refusing pickle weight file.*pytorch_model.bin"):
        hub.from_pretrained(pickled)
    # a pickle in a sub-folder counts too
    nested = tmp_path / "nested"
    shutil.copytree(tiny_dir, nested)
    (nested / "extra").mkdir()
    (nested / "extra" / "head.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="refusing pickle.*head.pt"):
        hub.from_pretrained(nested)
    # the same through the Hub cache
    hand_made_cache(hf_cache, "someone/pickled", pickled)
    with pytest.raises(ModelError, match="refusing pickle"):
        hub.from_pretrained("someone/pickled")
    # and a folder without any weights
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / STETH_METADATA).write_text(json.dumps({"plugin": "ast"}))
    with pytest.raises(ModelError, match="no .safetensors weights"):
        hub.from_pretrained(empty)


def test_a_hub_repo_with_only_pickle_weights_is_refused(fake_hub, tmp_path, tiny_dir):
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=fake_hub.url, token=TOKEN)
    api.create_repo("someone/old-style")
    api.create_commit("someone/old-style", [
        CommitOperationAdd("config.json", str(tiny_dir / "config.json")),
        CommitOperationAdd("pytorch_model.bin", b"\x80\x04pickled"),
    ], commit_message="old checkpoint")
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="only pickle weights .*pytorch_model.bin"):
        hub.from_pretrained("someone/old-style", endpoint=fake_hub.url, cache_dir=cache)
    downloaded = {p.name for p in cache.rglob("*") if p.is_file() and "snapshots" in p.parts}
    assert downloaded == {"config.json"}  # the pickle was never fetched


def test_remote_code_needs_the_opt_in_and_a_pinned_revision(tiny_dir, hf_cache):
    with pytest.raises(ModelError, match="needs a pinned revision"):
        hub.from_pretrained("someone/custom-code", trust_remote_code=True)
    with pytest.raises(ModelError, match="needs a pinned revision"):
        hub.from_pretrained("someone/custom-code", revision="main", trust_remote_code=True)
    config = json.loads((tiny_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForAudioClassification": "modeling_x.XForAudioClassification"}
    (tiny_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="trust_remote_code=True with revision="):
        hub.from_pretrained(tiny_dir)
    assert hub.from_pretrained(tiny_dir, trust_remote_code=True).threshold == pytest.approx(0.37)


# --------------------------------------------------------------------------- anyone's AST checkpoint
def test_a_plain_transformers_ast_checkpoint_is_adopted_with_a_warning(tiny_model, tiny_dir, clips):
    (tiny_dir / STETH_METADATA).unlink()
    with pytest.warns(UserWarning, match="no steth.json: adopting it"):
        model = hub.from_pretrained(tiny_dir)
    assert model.plugin_name == "ast" and model.threshold == 0.5
    assert model.metadata.get("adopted") is True
    assert model.preset["name"] == "excerpt-10s" and model.preset["steps"]  # the default preset, written out
    np.testing.assert_allclose(model.predict_proba(clips), tiny_model.predict_proba(clips), rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in tiny_dir.iterdir()) == ["config.json", "model.safetensors",
                                                          "preprocessor_config.json"]  # untouched


def test_a_checkpoint_whose_asthma_output_is_unknown_is_refused(tiny_dir):
    (tiny_dir / STETH_METADATA).unlink()
    config = json.loads((tiny_dir / "config.json").read_text())
    config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1"}
    (tiny_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="cannot tell which output is asthma"):
        hub.from_pretrained(tiny_dir)
    config["model_type"] = "wav2vec2"
    (tiny_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="model_type 'wav2vec2'"):
        hub.from_pretrained(tiny_dir)


def test_transformers_pipeline_loads_an_ast_folder(tiny_dir, example_wavs):
    from transformers import AutoModelForAudioClassification, pipeline

    from steth_hub.audio import decode

    net = AutoModelForAudioClassification.from_pretrained(tiny_dir)
    assert net.config.id2label == {0: "not_asthma", 1: "asthma"}
    classify = pipeline("audio-classification", model=str(tiny_dir))
    rec = decode(example_wavs[0]).resampled(16000)
    scores = classify(rec.samples, top_k=None)
    assert {s["label"] for s in scores} == {"asthma", "not_asthma"}
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- publishing
def test_push_to_the_fake_hub_then_load_back(fake_hub, tmp_path, tiny_model, clips):
    url = tiny_model.push_to_hub("steth-test/tiny-ast", token=TOKEN, endpoint=fake_hub.url)
    assert url.startswith(f"{fake_hub.url}/steth-test/tiny-ast/commit/")
    assert len(fake_hub.commits_made) == 1  # weights, configs and card in ONE commit
    files = fake_hub.files("steth-test/tiny-ast")
    assert set(files) == SAFE_FILES
    meta = json.loads(files[STETH_METADATA])
    assert meta["plugin"] == "ast" and meta["threshold"] == pytest.approx(0.37)
    assert meta["distribution"] == "steth-hub"  # a loader without the plugin can say what to install
    card = files["README.md"].decode()
    assert "not a diagnosis" in card and "steth-test/tiny-ast" in card

    cache = tmp_path / "cache"
    loaded = hub.from_pretrained("steth-test/tiny-ast", endpoint=fake_hub.url, cache_dir=cache, token=TOKEN)
    np.testing.assert_array_equal(loaded.predict_proba(clips), tiny_model.predict_proba(clips))
    # the download went through the fake Hub and landed in the given cache
    assert ("GET", "/api/models/steth-test/tiny-ast/revision/main") in fake_hub.requests
    snapshot = hub.resolve("steth-test/tiny-ast", cache_dir=cache, local_files_only=True)
    assert {p.name for p in snapshot.iterdir()} == SAFE_FILES
    for name in SAFE_FILES:
        assert (snapshot / name).read_bytes() == files[name]


def test_a_model_hub_mixin_plugin_travels_the_same_way(fake_hub, tmp_path, clips):
    """DenseNet saves through huggingface_hub's PyTorchModelHubMixin; steth.json + the registry load it back."""
    from steth_hub.registry import get_registry

    pytest.importorskip("timm")
    cls = get_registry().get("classifier", "densenet201").load()
    torch.manual_seed(0)
    model = cls.from_config({"architecture": "densenet121", "model_kwargs": {"growth_rate": 4, "block_config": [1, 1]}})
    model.threshold = 0.61
    hub.push_to_hub(model, "steth-test/tiny-densenet", token=TOKEN, endpoint=fake_hub.url)
    files = fake_hub.files("steth-test/tiny-densenet")
    assert set(files) == {"config.json", "model.safetensors", STETH_METADATA, "README.md"}
    assert json.loads(files["config.json"])["architecture"] == "densenet121"  # the mixin's config names it
    assert "library_name: steth-hub" in files["README.md"].decode()  # our card replaced the mixin's
    loaded = hub.from_pretrained("steth-test/tiny-densenet", endpoint=fake_hub.url, cache_dir=tmp_path / "cache")
    assert type(loaded) is cls and loaded.threshold == pytest.approx(0.61)
    np.testing.assert_array_equal(loaded.predict_proba(clips), model.predict_proba(clips))


def test_steth_push_cli_publishes_a_folder_in_one_commit(fake_hub, tiny_dir, tmp_path):
    from click.testing import CliRunner

    from steth_hub.cli import main

    (tiny_dir / "train_log.py").write_text("print('not published')\n")
    result = CliRunner().invoke(main, ["push", str(tiny_dir), "steth-test/cli-ast", "--private",
                                       "--token", TOKEN, "--endpoint", fake_hub.url, "--message", "first"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith(f"{fake_hub.url}/steth-test/cli-ast/commit/")
    assert set(fake_hub.files("steth-test/cli-ast")) == SAFE_FILES
    assert fake_hub.repos["steth-test/cli-ast"].private
    assert fake_hub.commits_made[-1]["summary"] == "first"
    assert not (tiny_dir / "README.md").exists()  # the model folder is not modified by a push

    # pushing the same folder again: the repo exists, nothing changed, no new commit
    first_url = result.output.strip()
    result = CliRunner().invoke(main, ["push", str(tiny_dir), "steth-test/cli-ast", "--token", TOKEN,
                                       "--endpoint", fake_hub.url])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == first_url and len(fake_hub.commits_made) == 1

    # a changed model as a pull request leaves main alone
    main_before = fake_hub.files("steth-test/cli-ast")
    meta = json.loads((tiny_dir / STETH_METADATA).read_text())
    (tiny_dir / STETH_METADATA).write_text(json.dumps({**meta, "threshold": 0.55}))
    result = CliRunner().invoke(main, ["push", str(tiny_dir), "steth-test/cli-ast", "--token", TOKEN,
                                       "--endpoint", fake_hub.url, "--create-pr"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{fake_hub.url}/steth-test/cli-ast/discussions/1"
    assert fake_hub.files("steth-test/cli-ast") == main_before
    assert json.loads(fake_hub.files("steth-test/cli-ast", "refs/pr/1")[STETH_METADATA])["threshold"] == 0.55


def test_push_refuses_pickles_and_bad_tokens_before_anything_is_committed(fake_hub, tiny_dir):
    from click.testing import CliRunner

    from steth_hub.cli import main

    (tiny_dir / "optimizer.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="refusing pickle.*optimizer.pt"):
        hub.push_to_hub(tiny_dir, "steth-test/pickled", token=TOKEN, endpoint=fake_hub.url)
    (tiny_dir / "optimizer.pt").unlink()
    result = CliRunner().invoke(main, ["push", str(tiny_dir), "steth-test/denied", "--token", "wrong",
                                       "--endpoint", fake_hub.url])
    assert result.exit_code == 2
    assert "refused the upload" in result.output and "write access" in result.output
    assert fake_hub.commits_made == [] and fake_hub.repos == {}


def test_push_while_offline_says_so(tiny_dir, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        hub.push_to_hub(tiny_dir, "steth-test/offline", token=TOKEN, endpoint="http://127.0.0.1:9")


# --------------------------------------------------------------------------- the CLI and imports
def test_steth_screen_with_the_default_model_name_offline(example_wavs, tmp_path):
    from click.testing import CliRunner

    from steth_hub.cli import COMMANDS, _available, main

    if not _available(COMMANDS["screen"][0]):
        pytest.skip("`steth screen` is not there yet (steth_hub/commands/screen.py)")
    if not (hub.EMBEDDED[hub.DEFAULT_MODEL] / STETH_METADATA).is_file():
        pytest.skip("the embedded model steth/ast-asthma is not trained yet")
    env = {"HF_HUB_CACHE": str(tmp_path / "empty-cache")}  # the suite runs with HF_HUB_OFFLINE=1
    result = CliRunner(env=env).invoke(main, ["screen", str(example_wavs[0]), "--model", "steth/ast-asthma",
                                              "--json"])
    assert result.exit_code == 0, result.output
    assert "asthma" in result.output


def test_steth_screen_resolves_the_default_name_offline_with_an_empty_cache(hf_cache, tmp_path, example_wavs,
                                                                           monkeypatch):
    """`steth screen --model steth/efficientat-asthma` goes through the embedded alias (a tiny stand-in model here)."""
    from click.testing import CliRunner

    from steth_hub.cli import COMMANDS, _available, main
    from steth_hub.preprocess import load_preset

    if not _available(COMMANDS["screen"][0]):
        pytest.skip("`steth screen` is not there yet (steth_hub/commands/screen.py)")
    model = make_tiny_ast()
    model.preset = load_preset("excerpt-10s").to_dict()
    monkeypatch.setitem(hub.EMBEDDED, hub.DEFAULT_MODEL, model.save_pretrained(tmp_path / "stand-in"))
    # screen keeps loaded models per name for the process: give this test its own, so the stand-in
    # neither meets an earlier test's model nor outlives this test
    monkeypatch.setattr(importlib.import_module("steth_hub.screening"), "_MODEL_CACHE", {})
    result = CliRunner().invoke(main, ["screen", str(example_wavs[0]), "--model", hub.DEFAULT_MODEL, "--json"])
    assert result.exit_code == 0, result.output
    assert '"probability"' in result.output and '"threshold": 0.37' in result.output
    assert list(hf_cache.iterdir()) == []


def test_importing_the_hub_modules_stays_light():
    code = ("import sys, steth_hub.hub, steth_hub.card, steth_hub.commands.hub; "
            "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub', 'jinja2', 'datasets', 'sklearn') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
