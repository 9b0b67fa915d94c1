"""The manifest importer: a folder of real recordings described by a CSV (docs/corpus.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from steth_hub.corpus import import_corpus, load_corpus
from steth_hub.errors import CorpusError

HEADER = "path,patient_id,diagnosis,label,sex,age,site,device,notes\n"


@pytest.fixture
def clinic(tmp_path, examples_dir) -> Path:
    """A clinic's folder: real recordings under neutral names, in sub-folders."""
    root = tmp_path / "clinic"
    (root / "day1").mkdir(parents=True)
    (root / "day2").mkdir()
    kauh = examples_dir / "kauh"
    shutil.copy(kauh / "EP38_Asthma,E W,P R M,38,M_middle10sec.wav", root / "day1" / "a.wav")
    shutil.copy(kauh / "BP64_asthma,E W,P L U,60,M_middle10sec.wav", root / "day1" / "b.wav")
    shutil.copy(kauh / "EP32_N,N,A R L,30,M_middle10sec.wav", root / "day2" / "c.wav")
    shutil.copy(kauh / "DP72_N,N,P R U,24,F_middle10sec.wav", root / "day2" / "d.wav")
    shutil.copy(examples_dir / "icbhi" / "112_1b1_Ar_sc_Meditron_middle10sec.wav", root / "day2" / "e.wav")
    return root


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_manifest_import_with_all_columns(tmp_path, clinic):
    _write(clinic / "manifest.csv", HEADER +
           "day1/a.wav,p1,Asthma,1,M,38,chest,Littmann,first visit\n"
           "day1/b.wav,p2,asthma + COPD,,male,60,,,\n"
           "day2/c.wav,p3,healthy,0,F,30,back,,\n"
           "day2/d.wav,p4,COPD,not_asthma,,,,,\n")
    report = import_corpus("manifest", clinic, tmp_path / "out", n_folds=2, progress=False)
    assert report.skipped == []
    rows = {r["recording_id"]: r for r in load_corpus(tmp_path / "out").rows()}
    assert set(rows) == {"manifest:day1/a", "manifest:day1/b", "manifest:day2/c", "manifest:day2/d"}
    a = rows["manifest:day1/a"]
    assert (a["patient_id"], a["label"], a["sex"], a["age"], a["site"], a["device"], a["source"]) == (
        "manifest:p1", 1, "M", 38.0, "chest", "Littmann", "manifest")
    b = rows["manifest:day1/b"]
    assert (b["diagnosis"], b["diagnosis_normalised"], b["label"], b["sex"]) == ("asthma + COPD", "asthma+copd", 1, "M")
    assert rows["manifest:day2/c"]["diagnosis_normalised"] == "normal"
    assert rows["manifest:day2/d"]["sex"] is None and rows["manifest:day2/d"]["age"] is None


def test_manifest_given_as_src_or_option_paths_relative_to_it(tmp_path, clinic):
    lists = tmp_path / "lists"
    lists.mkdir()
    shutil.copy(clinic / "day2" / "c.wav", lists / "local.wav")   # next to the CSV, not in SRC
    csv = _write(lists / "m.csv", "PATH, Patient_ID ,Diagnosis\n"
                 "day1/a.wav,p1,asthma\nday1/b.wav,p2,asthma\nlocal.wav,p3,N\nday2/d.wav,p4,N\n")
    report = import_corpus("manifest", clinic, tmp_path / "out", manifest=csv, n_folds=2, progress=False)
    assert report.qc["counts"]["imported"] == 4
    assert {r["file"] for r in report.imported} >= {"day1/a.wav", str(lists / "local.wav")}

    # SRC may be the CSV itself: paths then resolve against its folder
    shutil.copy(clinic / "day1" / "a.wav", lists / "a.wav")
    shutil.copy(clinic / "day1" / "b.wav", lists / "b.wav")
    shutil.copy(clinic / "day2" / "d.wav", lists / "d.wav")
    csv2 = _write(lists / "m2.csv", "path,patient_id,diagnosis\na.wav,p1,asthma\nb.wav,p2,asthma\n"
                  "local.wav,p3,N\nd.wav,p4,N\n")
    report = import_corpus("manifest", csv2, tmp_path / "out2", n_folds=2, progress=False)
    assert report.qc["counts"]["imported"] == 4


def test_manifest_missing_column_stops_the_import(tmp_path, clinic):
    _write(clinic / "manifest.csv", "path,diagnosis\nday1/a.wav,asthma\n")
    with pytest.raises(CorpusError) as err:
        import_corpus("manifest", clinic, tmp_path / "out", n_folds=2, progress=False)
    text = str(err.value)
    assert "patient_id" in text and "manifest.csv" in text and "docs/corpus.md" in text
    assert not (tmp_path / "out").exists()


def test_manifest_not_found(tmp_path, clinic):
    with pytest.raises(CorpusError, match="manifest not found"):
        import_corpus("manifest", clinic, tmp_path / "out", n_folds=2, progress=False)
    with pytest.raises(CorpusError, match="--manifest is for the manifest importer"):
        import_corpus("kauh", clinic, tmp_path / "out", manifest=clinic / "x.csv", n_folds=2, progress=False)


def test_manifest_bad_rows_are_skipped_with_reasons(tmp_path, clinic):
    _write(clinic / "manifest.csv", HEADER +
           "day1/a.wav,p1,asthma,1,,,,,\n"
           "day1/b.wav,p2,asthma,,,,,,\n"
           "day2/c.wav,p3,N,0,,,,,\n"
           "day2/d.wav,p4,N,,,,,,\n"
           "day2/missing.wav,p5,N,,,,,,\n"           # file not there
           "day2/e.wav,p6,COPD,1,,,,,\n"             # label says asthma, diagnosis says COPD
           "day2/e.wav,p7,asthma,0,,,,,\n"           # and the other way round
           "day2/e.wav,p8,asthma,maybe,,,,,\n"       # unreadable label
           "day2/e.wav,p9,N,,X,,,,\n"                # unreadable sex
           "day2/e.wav,p10,N,,,old,,,\n"             # unreadable age
           "day2/e.wav,,N,,,,,,\n"                   # no patient
           ",p12,N,,,,,,\n"                          # no path
           ",,,,,,,,\n")                             # blank line: ignored
    report = import_corpus("manifest", clinic, tmp_path / "out", n_folds=2, progress=False)
    codes = [(s["file"], s["code"]) for s in report.skipped]
    assert sorted(codes) == sorted([
        ("day2/missing.wav", "missing"), ("day2/e.wav", "mislabelled"), ("day2/e.wav", "mislabelled"),
        ("day2/e.wav", "bad-row"), ("day2/e.wav", "bad-row"), ("day2/e.wav", "bad-row"), ("day2/e.wav", "bad-row"),
        ("manifest.csv line 13", "bad-row")])
    reasons = " | ".join(s["reason"] for s in report.skipped)
    assert "line 6" in reasons and "line 7" in reasons
    mislabelled = [s for s in report.skipped if s["code"] == "mislabelled"]
    assert any("'COPD'" in s["reason"] and "not asthma" in s["reason"] for s in mislabelled)
    assert all(s["fix"] for s in report.skipped)
    assert report.qc["counts"]["imported"] == 4


# --------------------------------------------------------------------------- issue 13: no silent wrong data
GOOD_ROWS = "day1/a.wav,p1,asthma\nday1/b.wav,p2,asthma\nday2/c.wav,p3,N\nday2/d.wav,p4,N\n"


@pytest.mark.parametrize("value", ["Astma", "asthma?", "Asthma + COPDD", "ashtma"])
def test_an_unknown_diagnosis_is_an_error_listing_the_known_ones(tmp_path, clinic, value):
    _write(clinic / "manifest.csv", "path,patient_id,diagnosis\n" + GOOD_ROWS + f'day2/e.wav,p5,"{value}"\n')
    with pytest.raises(CorpusError, match="unknown diagnosis") as info:
        import_corpus("manifest", clinic, tmp_path / "out", n_folds=2, progress=False)
    text = str(info.value)
    assert "line 6" in text and "known: " in text and "asthma" in text and "--map-diagnosis" in text
    assert not (tmp_path / "out").exists()


def test_an_explicit_mapping_admits_a_misspelt_or_new_diagnosis(tmp_path, clinic):
    from steth_hub.cli import main
    from click.testing import CliRunner

    _write(clinic / "manifest.csv", "path,patient_id,diagnosis\n" + GOOD_ROWS.replace("p1,asthma", "p1,Astma")
           + "day2/e.wav,p5,asthma?\n")
    result = CliRunner().invoke(main, ["corpus", "import", "manifest", str(clinic), str(tmp_path / "out"),
                                       "--folds", "2", "--quiet", "--map-diagnosis", "Astma=asthma",
                                       "--map-diagnosis", "asthma?=asthma"])
    assert result.exit_code == 0, result.output
    rows = {r["recording_id"]: r for r in load_corpus(tmp_path / "out").rows()}
    assert rows["manifest:day1/a"]["label"] == 1 and rows["manifest:day1/a"]["diagnosis_normalised"] == "asthma"
    assert rows["manifest:day2/e"]["label"] == 1


@pytest.mark.parametrize("where", ["../outside.wav", "ABSOLUTE", "day1/../../outside.wav", "LINK"])
def test_paths_outside_the_source_folder_are_refused_unless_allowed(tmp_path, clinic, where):
    outside = tmp_path / "outside.wav"
    shutil.copy(clinic / "day2" / "e.wav", outside)
    if where == "ABSOLUTE":
        where = str(outside)
    if where == "LINK":  # a symlink inside SRC pointing out of it
        (clinic / "link.wav").symlink_to(outside)
        where = "link.wav"
    _write(clinic / "manifest.csv", "path,patient_id,diagnosis\n" + GOOD_ROWS + f"{where},p5,copd\n")
    with pytest.raises(CorpusError, match="outside the source folder") as info:
        import_corpus("manifest", clinic, tmp_path / "out", n_folds=2, progress=False)
    assert "--allow-outside-paths" in str(info.value)
    report = import_corpus("manifest", clinic, tmp_path / "out", n_folds=2, progress=False, allow_outside=True)
    assert report.qc["counts"]["imported"] == 5


def test_etc_passwd_is_never_opened(tmp_path, clinic, monkeypatch):
    import builtins

    opened = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    _write(clinic / "manifest.csv", "path,patient_id,diagnosis\n" + GOOD_ROWS + "/etc/passwd,p5,copd\n")
    monkeypatch.setattr(builtins, "open", spy)
    with pytest.raises(CorpusError, match="outside the source folder"):
        import_corpus("manifest", clinic, tmp_path / "out", n_folds=2, progress=False)
    assert "/etc/passwd" not in opened


@pytest.mark.parametrize("content, reason", [
    ("path,patient_id,diagnosis\nday1/a.wav,p1,Asthme\u00e9\n".encode("latin-1"), "not UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary"),
    (("path,patient_id,diagnosis\nday1/a.wav,p1,\"" + "x" * 200_000 + "\"\n").encode(), "not valid CSV"),
])
def test_a_manifest_that_is_not_csv_text_is_a_clear_error(tmp_path, clinic, content, reason):
    (clinic / "manifest.csv").write_bytes(content)
    with pytest.raises(CorpusError, match=reason) as info:
        import_corpus("manifest", clinic, tmp_path / "out", n_folds=2, progress=False)
    assert "manifest.csv" in str(info.value) and "fix:" in str(info.value)


def test_the_manifest_options_are_refused_for_other_importers(tmp_path, examples_dir):
    with pytest.raises(CorpusError, match="for the manifest importer"):
        import_corpus("kauh", examples_dir / "kauh", tmp_path / "out", diagnosis_map=["a=b"], progress=False)
