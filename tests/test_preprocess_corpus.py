"""Preprocessing and features over a real corpus: skipped recordings, saved clips, the feature cache, the CLI."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("datasets")

from steth_hub.audio import decode  # noqa: E402
from steth_hub.cli import main  # noqa: E402
from steth_hub.clips import ClipSet  # noqa: E402
from steth_hub.errors import CorpusError  # noqa: E402
from steth_hub.preprocess import cached_clips, clips_dir, load_preset, preprocess_corpus  # noqa: E402

KAUH = {  # file -> (patient, diagnosis)
    "BP64_asthma,E W,P L U,60,M_middle10sec.wav": ("64", "asthma"),
    "DP72_N,N,P R U,24,F_middle10sec.wav": ("72", "normal"),
    "EP13_Heart Failure,C,P L L,55,M_middle10sec.wav": ("13", "heart failure"),
    "EP32_N,N,A R L,30,M_middle10sec.wav": ("32", "normal"),
    "EP38_Asthma,E W,P R M,38,M_middle10sec.wav": ("38", "asthma"),
}
ICBHI = {"112_1b1_Ar_sc_Meditron_middle10sec.wav": ("112", "COPD"),   # really clipped: skipped
         "113_1b1_Ar_sc_Litt3200_middle10sec.wav": ("113", "COPD")}


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory, examples_dir):
    """A manifest corpus of the shipped examples plus a real recording cut to 4 s (too short)."""
    import soundfile as sf

    from steth_hub.corpus import import_corpus

    src = tmp_path_factory.mktemp("src")
    rows = []
    for folder, table in (("kauh", KAUH), ("icbhi", ICBHI)):
        for name, (patient, diagnosis) in table.items():
            shutil.copy(examples_dir / folder / name, src / f"{folder}-{patient}.wav")
            rows.append({"path": f"{folder}-{patient}.wav", "patient_id": f"{folder}-{patient}",
                         "diagnosis": diagnosis})
    rec = decode(examples_dir / "kauh" / "BP64_asthma,E W,P L U,60,M_middle10sec.wav")
    sf.write(src / "short.wav", rec.samples[8000:24000], rec.sample_rate, subtype="PCM_16")
    rows.append({"path": "short.wav", "patient_id": "short-1", "diagnosis": "asthma"})
    with open(src / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "patient_id", "diagnosis"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path_factory.mktemp("corpus") / "c"
    import_corpus("manifest", src, out, n_folds=2, progress=False)
    return out


def test_preprocess_corpus_skips_and_reports(corpus_path):
    clips, skipped = preprocess_corpus(corpus_path, "excerpt-10s", progress=False)
    assert isinstance(clips, ClipSet) and len(clips) == 6 * 3  # 6 usable recordings, 3 clips each
    assert clips.waveforms.shape == (18, 80000) and clips.sample_rate == 16000
    assert {s["code"] for s in skipped} == {"clipped", "too-short"} and len(skipped) == 2
    by_code = {s["code"]: s for s in skipped}
    assert by_code["clipped"]["recording_id"].endswith("icbhi-112")
    assert by_code["too-short"]["patient_id"].endswith("short-1") and by_code["too-short"]["fix"]
    # labels and patients travel with every clip; the asthma patients are the KAUH asthma ones
    asthma = set(clips.patient_ids[clips.labels == 1])
    assert asthma == {"manifest:kauh-64", "manifest:kauh-38"}
    for rid in set(clips.recording_ids):
        sel = clips.recording_ids == rid
        assert list(clips.starts[sel]) == pytest.approx([0.5, 2.5, 4.5])
        assert len(set(clips.patient_ids[sel])) == 1
    assert clips.meta["preset"] == load_preset("excerpt-10s").to_dict()
    assert clips.meta["n_recordings"] == 8 and clips.meta["skipped"] == skipped


def test_nothing_left_is_a_corpus_error(corpus_path):
    with pytest.raises(CorpusError, match="no recording survived") as info:
        preprocess_corpus(corpus_path, "paper", progress=False)
    assert "too-short" in str(info.value) and "excerpt-10s" in info.value.fix


def test_clips_are_saved_once_and_reused(corpus_path, tmp_path):
    out = tmp_path / "clips"
    first, skipped, reused = cached_clips(corpus_path, None, progress=False, out=out)
    assert not reused and (out / "clips.safetensors").is_file() and (out / "clips.json").is_file()
    again, skipped2, reused2 = cached_clips(corpus_path, None, progress=False, out=out)
    assert reused2 and skipped2 == skipped
    assert np.array_equal(again.waveforms, first.waveforms) and list(again.patient_ids) == list(first.patient_ids)
    # another preset's steps do not match: recomputed
    other = {"name": "excerpt-10s", "steps": [{"resample": {"sample_rate": 8000}}, {"cut": {"seconds": 4}}]}
    changed, _, reused3 = cached_clips(corpus_path, other, progress=False, out=out)
    assert not reused3 and changed.sample_rate == 8000
    # a damaged save is recomputed, not trusted
    (out / "clips.safetensors").write_bytes(b"broken")
    _, _, reused4 = cached_clips(corpus_path, other, progress=False, out=out)
    assert not reused4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_feature_cache(corpus_path):
    torch = pytest.importorskip("torch")
    from steth_hub.features import MultiWindowLogMel, corpus_features

    first = corpus_features(corpus_path, "multiwindow-logmel", progress=False)
    assert not first.reused and tuple(first.features.shape) == (18, 3, 128, 501)
    assert first.path == corpus_path / "features" / "excerpt-10s" / "multiwindow-logmel"
    clips = ClipSet.load(clips_dir(corpus_path, load_preset()))
    assert torch.allclose(first.features[:2], MultiWindowLogMel()(clips.waveforms[:2], 16000), atol=1e-4)
    second = corpus_features(corpus_path, "multiwindow-logmel", progress=False)
    assert second.reused and torch.equal(second.features, first.features)
    assert list(second.patient_ids) == list(first.patient_ids) and np.array_equal(second.labels, first.labels)
    # other extractor settings: another key, recomputed (and the cache now holds those)
    third = corpus_features(corpus_path, "multiwindow-logmel", extractor_params={"n_mels": 64}, progress=False)
    assert not third.reused and third.features.shape[2] == 64
    index = json.loads((third.path / "features.json").read_text())
    assert index["meta"]["settings"]["n_mels"] == 64 and index["meta"]["preset"]["name"] == "excerpt-10s"


def test_cli_preprocess_and_features(corpus_path):
    runner = CliRunner()
    result = runner.invoke(main, ["preprocess", str(corpus_path), "--quiet"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "preset excerpt-10s [default]" in out and "clipping(method=plateau, max_share=0.001" in out
    assert "recordings: 8, used: 6, skipped: 2" in out and "clips: 18 of 5 s at 16000 Hz" in out
    assert "[clipped]" in out and "[too-short]" in out and "icbhi-112" in out
    assert str(corpus_path / "clips" / "excerpt-10s") in out

    result = runner.invoke(main, ["preprocess", str(corpus_path), "--preset", "paper", "--no-save", "--quiet"])
    assert result.exit_code == 2 and "no recording survived" in result.output

    result = runner.invoke(main, ["features", str(corpus_path), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["shape"] == [18, 3, 128, 501] and summary["skipped"] == 2
    result = runner.invoke(main, ["features", str(corpus_path), "--quiet"])
    assert result.exit_code == 0 and "reused cached features" in result.output

    result = runner.invoke(main, ["features", str(corpus_path), "--extractor", "mel-magic", "--quiet"])
    assert result.exit_code == 2 and "no feature_extractor named 'mel-magic'" in result.output


def test_cli_lists_and_shows_presets(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["preprocess", "--list-presets"])
    assert result.exit_code == 0 and "preset excerpt-10s [default]" in result.output and "preset paper" in result.output
    result = runner.invoke(main, ["preprocess", "--show-preset", "--preset", "paper"])
    assert result.exit_code == 0 and load_preset(None).to_yaml() != result.output
    path = tmp_path / "p.yaml"
    path.write_text(result.output)
    assert load_preset(path).to_dict() == load_preset("paper").to_dict()
    result = runner.invoke(main, ["preprocess"])
    assert result.exit_code == 2 and "CORPUS" in result.output
