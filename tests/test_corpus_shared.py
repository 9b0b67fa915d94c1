"""Full imports of the shared KAUH and ICBHI recordings (../shared/data/lung-sounds).

These need the shared data; the ``shared_data`` fixture skips them with the reason (and how
to point STETH_HUB_SHARED_DATA at the folder) when it is absent.
"""

from __future__ import annotations

import pytest

from steth_hub.corpus import import_corpus, load_corpus, merge_corpora

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def corpora(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("shared-corpora")
    kauh = import_corpus("kauh", shared_data / "kauh", root / "kauh", n_folds=5, seed=0, progress=False)
    icbhi = import_corpus("icbhi", shared_data / "icbhi", root / "icbhi", n_folds=5, seed=0, progress=False)
    merged = merge_corpora([root / "kauh", root / "icbhi"], root / "all", n_folds=5, seed=0)
    return {"kauh": kauh, "icbhi": icbhi, "all": merged}


def _patient_disjoint(corpus) -> None:
    folds: dict[str, set] = {}
    for patient, fold in zip(corpus.column("patient_id"), corpus.column("fold")):
        folds.setdefault(patient, set()).add(fold)
    assert all(len(f) == 1 for f in folds.values())
    assert {p: min(f) for p, f in folds.items()} == corpus.splits["folds"]


def test_kauh_qc_names_the_real_conflicts_and_duplicates(corpora, shared_data):
    report = corpora["kauh"]
    found = sorted(p.name for p in (shared_data / "kauh").glob("*.wav"))
    assert report.qc["counts"]["found"] == len(found)
    conflicts = sorted(tuple(sorted(c["files"])) for c in report.conflicts)
    assert conflicts == [
        ("BP100_N,N,P R M,70,F_middle10sec.wav", "BP101_Asthma,E W,P L M,12,F_middle10sec.wav"),
        ("DP100_N,N,P R M,70,F_middle10sec.wav", "DP101_Asthma,E W,P L M,12,F_middle10sec.wav"),
        ("EP76_N,N,A L U,31,M_middle10sec.wav", "EP77_Asthma,E W,A R L,40,M_middle10sec.wav"),
    ]
    collapsed = {file: d["kept"] for d in report.duplicates for file in d["collapsed"]}
    assert collapsed["DP9_Asthma,E W,P R L ,59,M_middle10sec.wav"] == "BP9_Asthma,E W,P R L ,59,M_middle10sec.wav"
    assert collapsed["BP28_BRON,Crep,P L U,68,F (2)_middle10sec.wav"] == "BP28_BRON,Crep,P L U,68,F_middle10sec.wav"
    skipped = {s["file"]: s["code"] for s in report.skipped}
    # subject 22's recordings (both takes, all filters) are silent in this copy of the data
    assert {f for f, code in skipped.items() if code == "silent"} == {
        f"{x}P22_BRON,Crep,P R U,24,M{take}_middle10sec.wav" for x in "BDE" for take in ("", " (2)")}
    assert report.qc["counts"]["imported"] + report.qc["counts"]["skipped"] == len(found)
    for name in conflicts[0]:
        assert name in report.summary()

    corpus = load_corpus(report.out)
    ids = set(corpus.column("recording_id"))
    assert not {"kauh:BP100", "kauh:BP101", "kauh:DP100", "kauh:DP101", "kauh:EP76", "kauh:EP77"} & ids
    assert {"kauh:EP100", "kauh:EP101", "kauh:BP76", "kauh:BP77"} <= ids  # their other, distinct, recordings stay
    assert "kauh:DP9" not in ids and "kauh:BP9" in ids
    _patient_disjoint(corpus)
    assert all(row["asthma_patients"] >= 4 for row in corpus.splits["summary"])


def test_icbhi_import_collapses_copies_and_has_no_asthma(corpora):
    report = corpora["icbhi"]
    assert report.qc["counts"] == {**report.qc["counts"], "found": 42, "imported": 31, "skipped": 11,
                                   "conflicts": 0, "duplicates": 11}
    assert all(" (2)" in f for d in report.duplicates for f in d["collapsed"])
    corpus = load_corpus(report.out)
    assert set(corpus.column("label")) == {0}
    assert set(corpus.column("diagnosis_normalised")) == {"copd", "bronchiectasis", "bronchiolitis"}
    assert {"Meditron", "LittC2SE", "Litt3200", "AKGC417L"} == set(corpus.column("device"))
    _patient_disjoint(corpus)


def test_merged_training_corpus(corpora):
    merged = load_corpus(corpora["all"].out)
    assert len(merged) == corpora["kauh"].info["n_recordings"] + corpora["icbhi"].info["n_recordings"]
    assert merged.info["n_patients"] == corpora["kauh"].info["n_patients"] + corpora["icbhi"].info["n_patients"]
    _patient_disjoint(merged)
    summary = merged.summary()
    assert set(summary["by_source"]) == {"kauh", "icbhi"}
    assert all(row["asthma_patients"] >= 4 and row["patients"] >= 20 for row in merged.splits["summary"])
