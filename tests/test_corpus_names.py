"""File-name parsers (KAUH, ICBHI) and diagnosis normalisation, on the names of real recordings."""

from __future__ import annotations

import pytest

from steth_hub.corpus.diagnosis import asthma_label, normalise_diagnosis
from steth_hub.corpus.icbhi import parse_icbhi_name
from steth_hub.corpus.kauh import parse_kauh_name


@pytest.mark.parametrize("given, normalised, label", [
    ("N", "normal", 0),
    ("Healthy", "normal", 0),
    ("Asthma", "asthma", 1),
    ("asthma", "asthma", 1),
    ("  ASTHMA ", "asthma", 1),
    ("Heart Failure + COPD", "heart failure+copd", 0),
    ("Heart Failure + Lung Fibrosis ", "heart failure+lung fibrosis", 0),
    ("Asthma and lung fibrosis", "asthma+lung fibrosis", 1),
    ("COPD + asthma", "copd+asthma", 1),
    ("BRON", "bron", 0),
    ("copd", "copd", 0),
    ("Plueral Effusion", "pleural effusion", 0),
    ("URTI", "urti", 0),
    ("Some  Rare   Disease", "some rare disease", 0),
])
def test_diagnosis_normalisation_and_label(given, normalised, label):
    assert normalise_diagnosis(given) == normalised
    assert asthma_label(normalise_diagnosis(given)) == label


def test_empty_diagnosis_is_refused():
    with pytest.raises(ValueError):
        normalise_diagnosis("  + ")


def test_kauh_name_of_a_shipped_example(examples_dir):
    name = "EP38_Asthma,E W,P R M,38,M_middle10sec.wav"
    assert (examples_dir / "kauh" / name).is_file()
    meta = parse_kauh_name(name)
    assert meta["recording_id"] == "kauh:EP38"
    assert meta["patient_id"] == "kauh:38"
    assert meta["device"] == "kauh-extended"
    assert meta["diagnosis"] == "Asthma"
    assert meta["annotation"] == "E W"
    assert meta["site"] == "P R M"
    assert (meta["age"], meta["sex"], meta["take"]) == (38.0, "M", 1)


@pytest.mark.parametrize("name, recording_id, sex, site, diagnosis", [
    ("BP22_BRON,Crep,P R U,24,M (2)_middle10sec.wav", "kauh:BP22-2", "M", "P R U", "BRON"),
    ("BP108_COPD,E W,P R L ,63,M_middle10sec.wav", "kauh:BP108", "M", "P R L", "COPD"),
    ("BP4_Heart Failure + Lung Fibrosis ,I C,P L R,72,F_middle10sec.wav", "kauh:BP4", "F",
     "P L R", "Heart Failure + Lung Fibrosis"),
    ("DP72_N,N,P R U,24,F.wav", "kauh:DP72", "F", "P R U", "N"),                  # no _middle10sec
    ("dp72_n,n,p r u,24,f_MIDDLE10SEC.WAV", "kauh:DP72", "F", "p r u", "n"),      # case variants
    ("EP38_Asthma,E W,P R M,38,M_middle10sec .wav", "kauh:EP38", "M", "P R M", "Asthma"),  # trailing space
    ("BP28_BRON,Crep,P L U,68,f(3)_middle10sec.wav", "kauh:BP28-3", "F", "P L U", "BRON"),
])
def test_kauh_name_variants(name, recording_id, sex, site, diagnosis):
    meta = parse_kauh_name(name)
    assert (meta["recording_id"], meta["sex"], meta["site"], meta["diagnosis"]) == (recording_id, sex, site,
                                                                                    diagnosis)


def test_three_filters_of_one_subject_are_one_patient():
    ids = {parse_kauh_name(f"{f}P72_N,N,P R U,24,F_middle10sec.wav")["patient_id"] for f in "BDE"}
    devices = {parse_kauh_name(f"{f}P72_N,N,P R U,24,F_middle10sec.wav")["device"] for f in "BDE"}
    assert ids == {"kauh:72"}
    assert devices == {"kauh-bell", "kauh-diaphragm", "kauh-extended"}


@pytest.mark.parametrize("name, reason", [
    ("notes.wav", "does not start"),
    ("XP38_Asthma,E W,P R M,38,M_middle10sec.wav", "filter"),
    ("EP38_Asthma,E W,38,M_middle10sec.wav", "5 comma-separated"),
    ("EP38_Asthma,E W,P R M,old,M_middle10sec.wav", "age"),
    ("EP38_Asthma,E W,P R M,38,X_middle10sec.wav", "sex"),
    ("EP38_,E W,P R M,38,M_middle10sec.wav", "diagnosis"),
])
def test_kauh_bad_names_say_why(name, reason):
    with pytest.raises(ValueError, match=reason):
        parse_kauh_name(name)


def test_icbhi_names(examples_dir):
    name = "112_1b1_Ar_sc_Meditron_middle10sec.wav"
    assert (examples_dir / "icbhi" / name).is_file()
    meta = parse_icbhi_name(name)
    assert meta["recording_id"] == "icbhi:112_1b1_Ar_sc_Meditron"
    assert (meta["patient_id"], meta["site"], meta["device"], meta["mode"]) == ("icbhi:112", "Ar", "Meditron", "sc")
    second = parse_icbhi_name("149_1b1_Al_sc_Meditron (2)_middle10sec.wav")
    assert second["recording_id"] == "icbhi:149_1b1_Al_sc_Meditron-2"
    assert parse_icbhi_name("226_1b1_Pl_sc_LittC2SE.wav")["patient_id"] == "icbhi:226"
    with pytest.raises(ValueError):
        parse_icbhi_name("EP38_Asthma,E W,P R M,38,M_middle10sec.wav")
