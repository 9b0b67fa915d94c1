"""Importing the shipped real recordings: hygiene, bad files, the stored format, atomic writes, merge, CLI.

Everything here runs on steth_hub/examples and tests/data (no ../shared needed); bad files
are made in the test from the real recordings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from steth_hub.audio import decode, resample
from steth_hub.cli import main
from steth_hub.corpus import import_corpus, load_corpus, merge_corpora
from steth_hub.errors import CorpusError

KAUH_EXAMPLES = ["BP64_asthma,E W,P L U,60,M_middle10sec.wav", "DP72_N,N,P R U,24,F_middle10sec.wav",
                 "EP13_Heart Failure,C,P L L,55,M_middle10sec.wav", "EP32_N,N,A R L,30,M_middle10sec.wav",
                 "EP38_Asthma,E W,P R M,38,M_middle10sec.wav"]
CONFLICT = ["BP100_N,N,P R M,70,F_middle10sec.wav", "BP101_Asthma,E W,P L M,12,F_middle10sec.wav"]


def _kauh_folder(tmp_path: Path, examples_dir: Path, name: str = "kauh") -> Path:
    folder = tmp_path / name
    shutil.copytree(examples_dir / "kauh", folder)
    return folder


def _real(examples_dir: Path, name: str) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(examples_dir / "kauh" / name, dtype="float32")
    return samples, rate


def _skips(report) -> dict[str, str]:
    return {s["file"]: s["code"] for s in report.skipped}


def _assert_patient_disjoint(corpus) -> None:
    folds_of: dict[str, set] = {}
    for patient, fold in zip(corpus.column("patient_id"), corpus.column("fold")):
        folds_of.setdefault(patient, set()).add(fold)
    assert all(len(f) == 1 for f in folds_of.values()), folds_of
    assert {p: f.pop() for p, f in folds_of.items()} == corpus.splits["folds"]


# ----------------------------------------------------------------------------- importers on the examples

def test_kauh_examples_import_into_a_hf_audio_dataset(tmp_path, examples_dir):
    import datasets

    out = tmp_path / "corpus"
    report = import_corpus("kauh", examples_dir / "kauh", out, n_folds=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["corpus.json", "dataset", "qc.json", "splits.json"]
    assert report.qc["counts"]["imported"] == 5 and report.skipped == []

    corpus = load_corpus(out)
    assert len(corpus) == 5
    assert isinstance(corpus.dataset.features["audio"], datasets.Audio)
    on_disk = datasets.load_from_disk(str(out / "dataset"))
    assert isinstance(on_disk.features["audio"], datasets.Audio)  # a normal HF audio dataset
    rows = {r["recording_id"]: r for r in corpus.rows()}
    ep38 = rows["kauh:EP38"]
    assert ep38 == {**ep38, "patient_id": "kauh:38", "sex": "M", "age": 38.0, "site": "P R M",
                    "device": "kauh-extended", "diagnosis": "Asthma", "diagnosis_normalised": "asthma",
                    "label": 1, "source": "kauh", "sample_rate": 4000, "annotation": "E W"}
    assert ep38["duration"] == pytest.approx(10.0)
    assert rows["kauh:EP13"]["diagnosis_normalised"] == "heart failure" and rows["kauh:EP13"]["label"] == 0
    assert corpus.info["n_recordings"] == 5 and corpus.info["n_patients"] == 5
    assert corpus.info["source"] == "kauh"

    # the stored audio is the original file, byte for byte, and decodes to the hashed content
    for row, recording in corpus.recordings():
        original = next((examples_dir / "kauh").glob(f"{row['recording_id'].split(':')[1]}_*"))
        assert recording.content_hash() == row["content_hash"] == decode(original).content_hash()
        assert recording.source == row["recording_id"]
        assert "audio" not in row
    stored = corpus.dataset[0]["audio"]
    assert stored["bytes"] == (examples_dir / "kauh" / stored["path"]).read_bytes()
    _assert_patient_disjoint(corpus)


def test_icbhi_examples_import(tmp_path, examples_dir):
    report = import_corpus("icbhi", examples_dir / "icbhi", tmp_path / "icbhi", n_folds=2, progress=False)
    corpus = load_corpus(report.out)
    rows = {r["recording_id"]: r for r in corpus.rows()}
    assert set(rows) == {"icbhi:112_1b1_Ar_sc_Meditron", "icbhi:113_1b1_Ar_sc_Litt3200"}
    row = rows["icbhi:113_1b1_Ar_sc_Litt3200"]
    assert (row["patient_id"], row["site"], row["device"], row["diagnosis"], row["diagnosis_normalised"],
            row["label"], row["source"], row["annotation"]) == ("icbhi:113", "Ar", "Litt3200", "COPD", "copd", 0,
                                                                 "icbhi", None)
    assert sorted(corpus.splits["folds"].values()) == [0, 1]


def test_icbhi_needs_its_diagnosis_file_and_reports_unknown_patients(tmp_path, examples_dir):
    folder = tmp_path / "icbhi"
    shutil.copytree(examples_dir / "icbhi", folder)
    (folder / "patient_diagnosis.csv").unlink()
    with pytest.raises(CorpusError, match="patient_diagnosis.csv") as err:
        import_corpus("icbhi", folder, tmp_path / "out", n_folds=2, progress=False)
    assert "fix" in str(err.value)
    assert not (tmp_path / "out").exists()

    (folder / "patient_diagnosis.csv").write_text("112,COPD\n113,\n")
    with pytest.raises(CorpusError, match="line 2 has no diagnosis"):
        import_corpus("icbhi", folder, tmp_path / "out", n_folds=2, progress=False)

    # a header line and tabs are accepted; a patient missing from the table is skipped and named
    (folder / "patient_diagnosis.csv").write_text("patient\tdiagnosis\n112\tCOPD\n113\tCOPD\n")
    shutil.copy(folder / "112_1b1_Ar_sc_Meditron_middle10sec.wav", folder / "150_1b1_Ar_sc_Meditron.wav")
    (folder / "103_1b1_Ar_sc_Meditron.wav").write_bytes(b"")  # never decoded: the name check comes first
    report = import_corpus("icbhi", folder, tmp_path / "out", n_folds=2, progress=False)
    skips = _skips(report)
    assert skips == {"103_1b1_Ar_sc_Meditron.wav": "no-diagnosis", "150_1b1_Ar_sc_Meditron.wav": "no-diagnosis"}
    assert report.qc["counts"]["imported"] == 2


# ----------------------------------------------------------------------------- hygiene

def test_real_conflict_pair_is_excluded_and_named(tmp_path, examples_dir):
    folder = _kauh_folder(tmp_path, examples_dir)
    for name in CONFLICT:
        shutil.copy(Path(__file__).parent / "data" / "kauh-conflict" / name, folder / name)
    report = import_corpus("kauh", folder, tmp_path / "out", n_folds=2, progress=False)

    assert len(report.conflicts) == 1
    conflict = report.conflicts[0]
    assert sorted(conflict["files"]) == CONFLICT
    assert conflict["patients"] == ["kauh:100", "kauh:101"] and conflict["labels"] == [0, 1]
    assert _skips(report) == {CONFLICT[0]: "conflict", CONFLICT[1]: "conflict"}
    reasons = {s["file"]: s["reason"] for s in report.skipped}
    assert CONFLICT[1] in reasons[CONFLICT[0]]  # each names the other copy
    qc = json.loads((tmp_path / "out" / "qc.json").read_text())
    assert sorted(qc["conflicts"][0]["files"]) == CONFLICT
    assert qc["counts"]["found"] == 7 and qc["counts"]["imported"] == 5
    assert CONFLICT[0] in report.summary() and CONFLICT[1] in report.summary()
    corpus = load_corpus(tmp_path / "out")
    assert not {"kauh:100", "kauh:101"} & set(corpus.column("patient_id"))


def test_nothing_importable_is_a_clear_error(tmp_path):
    folder = Path(__file__).parent / "data" / "kauh-conflict"
    with pytest.raises(CorpusError) as err:
        import_corpus("kauh", folder, tmp_path / "out", n_folds=2, progress=False)
    assert CONFLICT[0] in str(err.value) and "conflict" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_duplicates_of_one_patient_are_collapsed(tmp_path, examples_dir):
    folder = _kauh_folder(tmp_path, examples_dir)
    source = folder / "EP38_Asthma,E W,P R M,38,M_middle10sec.wav"
    shutil.copy(source, folder / "EP38_Asthma,E W,P R M,38,M (2)_middle10sec.wav")   # second take, same audio
    report = import_corpus("kauh", folder, tmp_path / "out", n_folds=2, progress=False)
    assert report.duplicates == [{"kept": "EP38_Asthma,E W,P R M,38,M_middle10sec.wav",
                                  "collapsed": ["EP38_Asthma,E W,P R M,38,M (2)_middle10sec.wav"],
                                  "recording_id": "kauh:EP38", "patient_id": "kauh:38",
                                  "content_hash": decode(source).content_hash()}]
    assert _skips(report) == {"EP38_Asthma,E W,P R M,38,M (2)_middle10sec.wav": "duplicate"}
    assert report.conflicts == []
    assert load_corpus(report.out).column("recording_id").count("kauh:EP38") == 1


def _write_variant(path: Path, samples: np.ndarray, rate: int, gain: float) -> None:
    """A real recording at another gain: different content, same kind of sound."""
    sf.write(path, samples * gain, rate, subtype="PCM_16")


def test_metadata_conflicts_keep_the_majority_or_drop_the_patient(tmp_path, examples_dir):
    folder = _kauh_folder(tmp_path, examples_dir)
    samples, rate = _real(examples_dir, "DP72_N,N,P R U,24,F_middle10sec.wav")
    _write_variant(folder / "BP72_N,N,P R U,24,F_middle10sec.wav", samples, rate, 0.8)
    _write_variant(folder / "EP72_N,N,P R U,27,F_middle10sec.wav", samples, rate, 0.6)   # age disagrees
    samples, rate = _real(examples_dir, "EP32_N,N,A R L,30,M_middle10sec.wav")
    _write_variant(folder / "BP32_Asthma,E W,A R L,30,M_middle10sec.wav", samples, rate, 0.7)  # label disagrees
    report = import_corpus("kauh", folder, tmp_path / "out", n_folds=2, progress=False)

    skips = _skips(report)
    assert skips == {"EP72_N,N,P R U,27,F_middle10sec.wav": "metadata-conflict",
                     "BP32_Asthma,E W,A R L,30,M_middle10sec.wav": "metadata-conflict",
                     "EP32_N,N,A R L,30,M_middle10sec.wav": "metadata-conflict"}
    by_patient = {m["patient_id"]: m for m in report.qc["metadata_conflicts"]}
    assert by_patient["kauh:72"]["fields"] == ["age"]
    assert sorted(by_patient["kauh:72"]["kept"]) == ["BP72_N,N,P R U,24,F_middle10sec.wav",
                                                     "DP72_N,N,P R U,24,F_middle10sec.wav"]
    assert "label" in by_patient["kauh:32"]["fields"] and by_patient["kauh:32"]["kept"] == []
    ids = set(load_corpus(report.out).column("recording_id"))
    assert {"kauh:BP72", "kauh:DP72"} <= ids and not {"kauh:EP72", "kauh:EP32", "kauh:BP32"} & ids


def test_bad_files_are_reported_and_the_rest_imported(tmp_path, examples_dir):
    folder = _kauh_folder(tmp_path, examples_dir)
    ep38 = examples_dir / "kauh" / "EP38_Asthma,E W,P R M,38,M_middle10sec.wav"
    raw = ep38.read_bytes()
    samples, rate = _real(examples_dir, ep38.name)
    dp72, dp72_rate = _real(examples_dir, "DP72_N,N,P R U,24,F_middle10sec.wav")

    def name(subject: int, diagnosis: str = "Asthma,E W") -> str:
        return f"BP{subject}_{diagnosis},P R M,40,M_middle10sec.wav"

    bad = {
        name(901): "corrupt",        # garbage where a WAV header should be
        name(902): "corrupt",        # WAV cut inside its header
        name(903): "empty",          # 0 bytes
        name(904): "silent",         # a valid WAV of zeros
        name(905): "not-finite",     # float WAV holding NaN
        name(906): "sample-rate",    # 1 kHz
        "recording 7.wav": "bad-name",  # real audio, name without the KAUH fields
    }
    (folder / name(901)).write_bytes(b"\x00garbage" * 2000)
    (folder / name(902)).write_bytes(raw[:30])
    (folder / name(903)).write_bytes(b"")
    sf.write(folder / name(904), np.zeros(rate * 10, dtype=np.float32), rate, subtype="PCM_16")
    with_nan = samples.copy()
    with_nan[1000:1010] = np.nan
    sf.write(folder / name(905), with_nan, rate, subtype="FLOAT")
    sf.write(folder / name(906), samples[:10000], 1000, subtype="PCM_16")
    shutil.copy(examples_dir / "kauh" / "EP13_Heart Failure,C,P L L,55,M_middle10sec.wav", folder / "recording 7.wav")
    # kept, with a warning or at another rate
    (folder / name(907)).write_bytes(raw[: len(raw) * 6 // 10])                      # truncated mid-data
    sf.write(folder / name(908), np.stack([samples, 0.5 * samples], axis=1), rate, subtype="PCM_16")  # stereo
    sf.write(folder / name(909, "N,N"), resample(dp72, dp72_rate, 48000), 48000, subtype="PCM_16")   # 48 kHz

    report = import_corpus("kauh", folder, tmp_path / "out", n_folds=2, progress=False)
    assert _skips(report) == bad
    for skip in report.skipped:
        assert skip["reason"] and skip["fix"], skip
    bad_name = next(s for s in report.skipped if s["code"] == "bad-name")
    assert "{filter}P{subject}" in bad_name["fix"]  # says which pattern is expected

    imported = {row["file"]: row for row in report.imported}
    assert len(imported) == 8
    assert any("truncated" in w for w in imported[name(907)]["warnings"])
    assert any("2 channels" in w for w in imported[name(908)]["warnings"])
    rows = {r["recording_id"]: r for r in load_corpus(report.out).rows()}
    assert rows["kauh:BP909"]["sample_rate"] == 48000
    assert rows["kauh:BP907"]["duration"] == pytest.approx(6.0, abs=0.1)
    summary = report.summary()
    for file in bad:
        assert file in summary
    assert "truncated" in summary
    assert report.qc["counts"]["found"] == len(bad) + 8


def test_out_folder_that_is_not_a_corpus_is_never_replaced(tmp_path, examples_dir):
    out = tmp_path / "my-documents"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    with pytest.raises(CorpusError, match="not a steth-hub corpus"):
        import_corpus("kauh", examples_dir / "kauh", out, n_folds=2, progress=False)
    assert (out / "thesis.txt").read_text() == "precious"
    with pytest.raises(CorpusError, match="contains, the input"):
        import_corpus("kauh", examples_dir / "kauh", examples_dir, n_folds=2, progress=False)


# ----------------------------------------------------------------------------- atomic writes

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_import_leaves_the_previous_corpus(tmp_path, examples_dir, monkeypatch, failure):
    import steth_hub.corpus.store as store

    out = tmp_path / "corpus"
    import_corpus("kauh", examples_dir / "kauh", out, n_folds=2, progress=False)
    before = _snapshot(out)
    folder = _kauh_folder(tmp_path, examples_dir, "bigger")
    shutil.copy(Path(__file__).parent / "data" / "kauh-conflict" / CONFLICT[0], folder / CONFLICT[0])

    real_write = store.atomic_write_json

    def failing_write(path, obj):
        if Path(path).name == "splits.json":  # the dataset and qc.json are already written by now
            raise failure
        return real_write(path, obj)

    monkeypatch.setattr(store, "atomic_write_json", failing_write)
    with pytest.raises(type(failure)):
        import_corpus("kauh", folder, out, n_folds=2, progress=False)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bigger", "corpus"]  # no partial folder left
    assert len(load_corpus(out)) == 5

    monkeypatch.setattr(store, "atomic_write_json", real_write)  # re-running works
    report = import_corpus("kauh", folder, out, n_folds=2, progress=False)
    assert len(load_corpus(out)) == 6 and report.qc["counts"]["imported"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bigger", "corpus"]


def test_reimport_is_deterministic(tmp_path, examples_dir):
    first = import_corpus("kauh", examples_dir / "kauh", tmp_path / "a", n_folds=2, seed=3, progress=False)
    second = import_corpus("kauh", examples_dir / "kauh", tmp_path / "a", n_folds=2, seed=3, progress=False)
    assert first.splits == second.splits
    assert load_corpus(tmp_path / "a").column("content_hash") == [
        r["content_hash"] for r in load_corpus(tmp_path / "a").rows()]


# ----------------------------------------------------------------------------- load_corpus

def test_load_corpus_errors_are_clear(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="not a steth-hub corpus"):
        load_corpus(tmp_path / "empty")


def test_patients_and_selected_recordings(tmp_path, examples_dir):
    import_corpus("kauh", examples_dir / "kauh", tmp_path / "c", n_folds=2, progress=False)
    corpus = load_corpus(tmp_path / "c")
    patients = corpus.patients()
    assert set(patients) == {"kauh:64", "kauh:72", "kauh:13", "kauh:32", "kauh:38"}
    assert patients["kauh:38"].label == 1 and patients["kauh:72"].label == 0
    assert patients["kauh:38"].fold == corpus.splits["folds"]["kauh:38"]
    index = patients["kauh:38"].indices
    (row, recording), = list(corpus.recordings(index))
    assert row["recording_id"] == "kauh:EP38" and recording.sample_rate == 4000
    assert len(recording.samples) == 40000


# ----------------------------------------------------------------------------- merge

def test_merge_rechecks_conflicts_across_corpora_and_recomputes_folds(tmp_path, examples_dir):
    conflict = Path(__file__).parent / "data" / "kauh-conflict"
    a = _kauh_folder(tmp_path, examples_dir, "a")
    shutil.copy(conflict / CONFLICT[0], a / CONFLICT[0])
    b = tmp_path / "b"
    shutil.copytree(examples_dir / "icbhi", b)
    kauh_b = tmp_path / "kauh-b"
    kauh_b.mkdir()
    shutil.copy(conflict / CONFLICT[1], kauh_b / CONFLICT[1])
    shutil.copy(examples_dir / "kauh" / KAUH_EXAMPLES[0], kauh_b / KAUH_EXAMPLES[0])   # same as in a
    shutil.copy(examples_dir / "kauh" / KAUH_EXAMPLES[4], kauh_b / KAUH_EXAMPLES[4])
    samples, rate = _real(examples_dir, KAUH_EXAMPLES[1])
    _write_variant(kauh_b / "EP500_N,N,P R U,30,M_middle10sec.wav", samples, rate, 0.5)
    _write_variant(kauh_b / "EP501_N,N,P R U,33,F_middle10sec.wav", samples, rate, 0.4)

    import_corpus("kauh", a, tmp_path / "ca", n_folds=2, progress=False)
    import_corpus("icbhi", b, tmp_path / "cb", n_folds=2, progress=False)
    import_corpus("kauh", kauh_b, tmp_path / "cc", n_folds=2, progress=False)
    report = merge_corpora([tmp_path / "ca", tmp_path / "cb", tmp_path / "cc"], tmp_path / "merged", n_folds=2)

    assert len(report.conflicts) == 1
    assert sorted(report.conflicts[0]["files"]) == ["ca/" + CONFLICT[0], "cc/" + CONFLICT[1]]
    assert {d["kept"] for d in report.duplicates} == {"ca/" + KAUH_EXAMPLES[0], "ca/" + KAUH_EXAMPLES[4]}
    merged = load_corpus(tmp_path / "merged")
    ids = merged.column("recording_id")
    assert len(ids) == len(set(ids)) == 5 + 2 + 2
    assert set(merged.column("source")) == {"kauh", "icbhi"}
    assert merged.info["source"] == "merged" and len(merged.info["sources"]) == 3
    assert sorted(merged.splits["folds"]) == sorted(set(merged.column("patient_id")))
    _assert_patient_disjoint(merged)
    assert report.qc["counts"]["found"] == 6 + 2 + 5


# ----------------------------------------------------------------------------- CLI and imports

def test_cli_import_info_merge(tmp_path, examples_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["corpus", "import", "kauh", str(examples_dir / "kauh"), str(tmp_path / "k"),
                                  "--folds", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["corpus", "import", "ICBHI", str(examples_dir / "icbhi"), str(tmp_path / "i"),
                                  "--folds", "2"])
    assert result.exit_code == 0, result.output
    assert "2 imported" in result.output and "folds" in result.output
    result = runner.invoke(main, ["corpus", "merge", str(tmp_path / "m"), str(tmp_path / "k"), str(tmp_path / "i"),
                                  "--folds", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["corpus", "info", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "7 recordings, 7 patients" in result.output
    for word in ("asthma", "not_asthma", "heart failure", "copd", "icbhi", "kauh"):
        assert word in result.output
    result = runner.invoke(main, ["corpus", "info", str(tmp_path / "m"), "--json"])
    data = json.loads(result.output)
    assert data["by_label"] == {"asthma": {"recordings": 2, "patients": 2},
                                "not_asthma": {"recordings": 5, "patients": 5}}
    assert data["by_source"]["icbhi"] == {"recordings": 2, "patients": 2}
    assert data["per_patient"]["kauh:38"]["recordings"] == 1


def test_cli_errors_name_the_fix(tmp_path, examples_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["corpus", "import", "kauh", str(examples_dir / "kauh"), str(tmp_path / "k")])
    assert result.exit_code == 2
    assert "only 2 asthma patient(s) for 5 folds" in result.output and "--folds 2" in result.output
    assert not (tmp_path / "k").exists()
    result = runner.invoke(main, ["corpus", "info", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "corpus folder not found" in result.output


def test_importing_the_corpus_modules_stays_light():
    heavy = ["datasets", "sklearn", "torch", "transformers", "librosa", "gradio", "timm"]
    code = ("import sys, steth_hub.corpus, steth_hub.commands.corpus; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_info_names_its_argument_corpus():
    runner = CliRunner()
    result = runner.invoke(main, ["corpus", "info", "--help"])
    assert result.exit_code == 0, result.output
    assert "corpus info [OPTIONS] CORPUS" in result.output
    assert "OUT" not in result.output
    result = runner.invoke(main, ["corpus", "info"])
    assert result.exit_code == 2 and "Missing argument 'CORPUS'" in result.output
