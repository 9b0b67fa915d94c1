"""Patient-level screening and the clinician's report (issue 18), on real recordings.

A small MFCC + logistic-regression model is trained here on the shipped example recordings (fast,
no torch) and given an evaluation block in the format ``steth evaluate`` stores, so the report has
validated figures to quote. The end-to-end workflow on the shared recordings uses the default model.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from steth_hub.errors import ConfigError
from steth_hub.patient import PatientFacts, patient_probability, read_manifest, screen_patient

KAUH_NAME = "BP101_Asthma,E W,P L M,12,F_middle10sec.wav"
#: what a KAUH file name carries that must never reach an output (diagnosis + sound type, the name itself)
ANNOTATIONS = ("E W", "Asthma,E W", "BP101", "EP38", "middle10sec", "E W,P")


@pytest.fixture(scope="module")
def model_dir(example_wavs, tmp_path_factory):
    """An MFCC + logistic-regression model trained on the example clips, with an evaluation block."""
    from steth_hub import metrics
    from steth_hub.clips import ClipSet
    from steth_hub.errors import RecordingRejected
    from steth_hub.preprocess import Preprocessor, load_preset

    from steth_builtin.mfcc_logreg import MFCCLogReg

    pre = Preprocessor("excerpt-10s")
    sets = []
    for path in example_wavs:
        try:
            clips = pre.run(path, path.stem)
        except RecordingRejected:
            continue
        label = int("asthma" in path.name.lower())
        sets.append(ClipSet.from_clips(clips, [label] * len(clips), [path.stem] * len(clips)))
    model = MFCCLogReg.from_config({})
    model.fit(ClipSet.concatenate(sets))
    model.preset = load_preset("excerpt-10s").to_dict()
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 10)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, y.size), 0, 1)
    block = metrics.bootstrap_ci(y, p, 0.5, groups=np.arange(y.size), n=200)
    model.metadata.update({"name": "test/mfcc-patient", "evaluation": {
        "name": "test", "quick": False, "method": "5-fold patient-grouped cross-validation",
        "protocol": {"threshold": "max Youden's J on validation patients", "bootstrap": {"alpha": 0.05}},
        "model": {"levels": {"patient": block}, "subgroups": {"source=kauh": block}}}})
    folder = tmp_path_factory.mktemp("models") / "mfcc"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    from steth_hub.screening import load_model

    return load_model(model_dir)


@pytest.fixture
def kauh_named(examples_dir, tmp_path) -> Path:
    """A real KAUH recording under a KAUH name that carries the annotation 'E W' (and 'Asthma')."""
    src = next(p for p in sorted((examples_dir / "kauh").glob("*.wav")) if "E W" in p.name)
    dst = tmp_path / KAUH_NAME
    shutil.copy(src, dst)
    return dst


def _kauh(examples_dir) -> list[Path]:
    return sorted((examples_dir / "kauh").glob("*.wav"))


# --------------------------------------------------------------------------- the aggregation rule
def test_patient_probability_is_the_evaluation_rule():
    """Mean of recording means (what evaluate.level_tables scores), not the mean of all clips."""
    from steth_hub.evaluate import level_tables

    clips = [[0.9, 0.7], [0.1], [0.5, 0.5, 0.2]]
    recordings, patient = patient_probability(clips, 0.5)
    assert recordings == pytest.approx([0.8, 0.1, 0.4])
    assert patient == pytest.approx((0.8 + 0.1 + 0.4) / 3)
    assert patient != pytest.approx(np.mean([p for c in clips for p in c]))  # the pooled-clip mean differs
    rec_ids = [f"r{i}" for i, c in enumerate(clips) for _ in c]
    flat = [p for c in clips for p in c]
    tables = level_tables(rec_ids, ["x"] * len(flat), [0] * len(flat), [0] * len(flat), flat, [0.5] * len(flat))
    assert tables["patient"]["prob"][0] == pytest.approx(patient)


def test_screen_patient_aggregates_the_recordings_screen_gives(model, examples_dir):
    from steth_hub.screening import screen

    files = _kauh(examples_dir)[:3]
    result = screen_patient(files, model, patient="P1", sex="f", age="40")
    singles = [screen(f, model=model) for f in files]
    assert [r.probability for r in result.recordings] == pytest.approx([s.probability for s in singles])
    assert result.probability == pytest.approx(np.mean([s.probability for s in singles]))
    assert result.decision == (result.probability >= model.threshold)
    assert result.patient == PatientFacts("P1", "F", 40.0)
    # the drivers are the recordings on the decided side, the one that pushes hardest first
    side = [r for r in result.recordings if r.decision == result.decision]
    assert set(result.drivers) == {r.id for r in side} and result.deciding == result.drivers[0]
    assert max(side, key=lambda r: abs(r.probability - result.threshold)).id == result.deciding
    assert [r.id for r in result.recordings] == ["R1", "R2", "R3"] and not result.rejected


# --------------------------------------------------------------------------- rejected recordings
def test_every_rejected_recording_is_listed_with_its_reason(model, examples_dir, tmp_path):
    good = _kauh(examples_dir)[:2]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF0000WAVEfmt garbage")
    copy = tmp_path / "copy.wav"
    shutil.copy(good[0], copy)
    result = screen_patient([good[0], corrupt, tmp_path / "missing.wav", good[1], copy], model, patient="P2")
    assert [r.id for r in result.recordings] == ["R1", "R4"]
    rejected = {r.id: r for r in result.rejected}
    assert set(rejected) == {"R2", "R3", "R5"}
    assert rejected["R5"].code == "duplicate" and "R1" in rejected["R5"].message
    assert all(r.message and r.code for r in result.rejected)
    assert result.to_dict()["n_rejected"] == 3
    text = json.dumps(result.to_dict())
    assert "corrupt.wav" not in text and "missing.wav" not in text  # named R<n>, never by file

    nothing = screen_patient([corrupt], model, patient="P3")
    assert nothing.probability is None and nothing.decision is None and nothing.label == "no_result"
    assert [r.id for r in nothing.rejected] == ["R1"]


def test_a_recording_failing_the_quality_checks_is_shown_but_not_counted(model, model_dir, examples_dir):
    """The clipped ICBHI example: a training corpus (so the evaluation) rejects it; screening warns.
    In a patient result it is listed as rejected for quality with its P(asthma), and not averaged in."""
    from steth_hub.cli import main
    from steth_hub.screening import screen

    clipped = examples_dir / "icbhi" / "112_1b1_Ar_sc_Meditron_middle10sec.wav"
    clean = _kauh(examples_dir)[0]
    result = screen_patient([clipped, clean], model, patient="Q")
    (flagged,) = result.rejected
    assert flagged.id == "R1" and flagged.code == "quality" and "clipped" in flagged.message
    assert flagged.probability == pytest.approx(screen(clipped, model=model).probability)
    assert [r.id for r in result.recordings] == ["R2"]
    assert result.probability == pytest.approx(screen(clean, model=model).probability)
    kept = screen_patient([clipped, clean], model, patient="Q", quality="keep")
    assert len(kept.recordings) == 2 and not kept.rejected and any("clipped" in w for w in kept.recordings[0].warnings)
    out = CliRunner().invoke(main, ["screen", "--patient", "Q", str(clipped), str(clean), "--model", str(model_dir),
                                    "--quiet", "--include-flagged"])
    assert out.exit_code == 0 and "mean of 2 recording(s)" in out.output


def test_cli_patient_mode_lists_rejections_and_strict_fails(model_dir, examples_dir, tmp_path):
    from steth_hub.cli import main

    good = [str(p) for p in _kauh(examples_dir)[:2]]
    bad = tmp_path / "empty.wav"
    bad.write_bytes(b"")
    runner = CliRunner()
    out = runner.invoke(main, ["screen", "--patient", "P9", *good, str(bad), "--model", str(model_dir), "--quiet"])
    assert out.exit_code == 0, out.output
    assert "PATIENT: P(asthma) = " in out.output and "rejected R3" in out.output
    assert "2 screened, 1 rejected" in out.output
    strict = runner.invoke(main, ["screen", "--strict", "--patient", "P9", *good, str(bad), "--model",
                                  str(model_dir), "--quiet"])
    assert strict.exit_code == 1
    as_json = runner.invoke(main, ["screen", "--patient", "P9", *good, "--model", str(model_dir), "--json"])
    data = json.loads(as_json.output)
    assert as_json.exit_code == 0 and data["patients"][0]["n_recordings"] == 2
    none = runner.invoke(main, ["screen", "--patient", "P9", str(bad), "--model", str(model_dir), "--quiet"])
    assert none.exit_code == 1 and "no result" in none.output


def test_strict_per_file_mode(model_dir, examples_dir, tmp_path):
    """issue 13: --strict exits non-zero when any file failed; the default rule is unchanged."""
    from steth_hub.cli import main

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    good = str(_kauh(examples_dir)[0])
    runner = CliRunner()
    assert runner.invoke(main, ["screen", good, str(bad), "--model", str(model_dir), "--quiet"]).exit_code == 0
    assert runner.invoke(main, ["screen", "--strict", good, str(bad), "--model", str(model_dir),
                                "--quiet"]).exit_code == 1
    assert runner.invoke(main, ["screen", "--strict", good, "--model", str(model_dir), "--quiet"]).exit_code == 0


# --------------------------------------------------------------------------- manifests
def test_manifest_csv_and_json(examples_dir, tmp_path):
    files = _kauh(examples_dir)
    csv_file = tmp_path / "patients.csv"
    with csv_file.open("w", newline="", encoding="utf-8") as handle:  # KAUH names hold commas: quoted
        csv.writer(handle).writerows([["patient_id", "path", "site", "sex", "age"], ["A", files[0], "P L M", "F", 12],
                                      ["A", files[1], "P L L", "", ""], ["B", files[2].name, "Tc", "M", 60]])
    shutil.copy(files[2], tmp_path / files[2].name)  # a relative path is taken from the manifest's folder
    patients = read_manifest(csv_file)
    assert [p.facts.patient_id for p in patients] == ["A", "B"]
    assert patients[0].facts == PatientFacts("A", "F", 12.0)
    assert [r.site for r in patients[0].recordings] == ["P L M", "P L L"]
    assert Path(patients[1].recordings[0].path) == tmp_path / files[2].name

    json_file = tmp_path / "patients.json"
    json_file.write_text(json.dumps({"patients": [{"patient_id": "C", "sex": "male", "age": 30,
                                                   "recordings": [{"path": str(files[0]), "site": "A R M"}]}]}))
    (c,) = read_manifest(json_file)
    assert c.facts == PatientFacts("C", "M", 30.0) and c.recordings[0].site == "A R M"


@pytest.mark.parametrize("text, words", [
    ("patient,file\nA,x.wav\n", "lacks the column"),
    ("patient_id,path,sex\nA,x.wav,F\nA,y.wav,M\n", "has sex"),
    ("patient_id,path,age\nA,x.wav,old\n", "row 2 age"),
    ("patient_id,path\n", "lists no recordings"),
    ("patient_id,path,site\nA,BP1_N,N,P L M,1,F.wav,P L M\n", "double quotes"),
])
def test_bad_manifests_are_clear_errors(tmp_path, text, words):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as info:
        read_manifest(path)
    assert info.value.fix


# --------------------------------------------------------------------------- the report
def test_fhir_export_validates_and_validation_can_fail(model, examples_dir, tmp_path):
    from steth_hub.report import build_report, to_fhir, validate_fhir

    corrupt = tmp_path / "c.wav"
    corrupt.write_bytes(b"junk")
    result = screen_patient([*_kauh(examples_dir)[:2], corrupt], model, patient="F1", sex="M", age=50)
    bundle = to_fhir(build_report(result, model, pictures=False, created="2026-01-01T00:00:00+00:00"))
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[0] == "DiagnosticReport" and kinds.count("Observation") == 5  # 2 recordings, 1 rejected, patient, age
    report = bundle["entry"][0]["resource"]
    assert report["status"] == "preliminary" and len(report["result"]) == 5
    patient_obs = next(e["resource"] for e in bundle["entry"]
                       if e["resource"].get("code", {}).get("text", "").startswith("Patient-level"))
    assert patient_obs["valueQuantity"]["value"] == pytest.approx(result.probability, abs=1e-6)
    assert patient_obs["interpretation"][0]["coding"][0]["code"] == ("POS" if result.decision else "NEG")
    assert any("dataAbsentReason" in e["resource"] for e in bundle["entry"])  # the rejected one, listed
    # the same report gives the same bundle (deterministic identifiers)
    again = to_fhir(build_report(result, model, pictures=False, created="2026-01-01T00:00:00+00:00"))
    assert again == bundle
    broken = json.loads(json.dumps(bundle))
    broken["entry"][3]["resource"]["valueQuantity"] = {"value": "high"}
    with pytest.raises(ConfigError, match="does not validate"):
        validate_fhir(broken)


def test_pdf_renders_one_non_blank_page(model, examples_dir, tmp_path):
    import pypdfium2 as pdfium

    from steth_hub.report import build_report, write_report

    result = screen_patient(_kauh(examples_dir)[:3], model, patient="PDF1", sex="F", age=33)
    report = build_report(result, model)
    assert report.data["pictures"]["spectrogram"] and report.spectrogram_png  # the three-window spectrogram
    path = write_report(report, tmp_path / "report.pdf")
    pdf = pdfium.PdfDocument(str(path))
    try:
        assert len(pdf) == 1
        page = pdf[0]
        image = np.asarray(page.render(scale=1.0).to_pil().convert("L"), dtype=np.float64)
        text = page.get_textpage().get_text_range()
    finally:
        pdf.close()
    assert image.std() > 20 and (image < 100).mean() > 0.02  # text, tables and pictures, not a blank page
    for words in ("PDF1", "P(asthma)", "not a diagnosis", "test/mfcc-patient", "Intended use", "within kauh",
                  "R1", "R3", f"{result.probability:.3f}"):
        assert words in text, words
    html = write_report(report, tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 + bool(report.explanation_png)


def test_no_annotation_from_file_names_in_any_output(model_dir, model, kauh_named, examples_dir, tmp_path):
    """A KAUH name carries the diagnosis and the sound type ('E W'): no output may show them."""
    import pypdfium2 as pdfium

    from steth_hub.cli import main

    files = [str(kauh_named), str(_kauh(examples_dir)[1])]
    runner = CliRunner()
    outs = [tmp_path / n for n in ("r.pdf", "r.html", "r.json", "r.fhir.json")]
    done = runner.invoke(main, ["report", "--patient", "K1", *files, "--model", str(model_dir), "--quiet",
                                *[a for o in outs for a in ("--out", str(o))]])
    assert done.exit_code == 0, done.output
    screened = runner.invoke(main, ["screen", "--patient", "K1", *files, "--model", str(model_dir), "--quiet"])
    as_json = runner.invoke(main, ["screen", "--patient", "K1", *files, "--model", str(model_dir), "--json"])
    pdf = pdfium.PdfDocument(str(outs[0]))
    try:
        pdf_text = "".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    finally:
        pdf.close()
    texts = {"report command": done.output, "screen": screened.output, "screen --json": as_json.output,
             "pdf": pdf_text, **{o.name: re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", o.read_text())
                                 for o in outs[1:]}}
    for where, text in texts.items():
        for annotation in ANNOTATIONS:
            assert annotation not in text, f"{annotation!r} in {where}"
    data = json.loads(outs[2].read_text())
    assert data["recordings"][0]["site"] == "P L M" and data["recordings"][0]["filter"] == "bell"  # facts only


def test_report_without_evaluation_says_accuracy_is_unknown(example_wavs, tmp_path, model_dir, model):
    from steth_hub.report import build_report, validated_performance

    assert validated_performance({})["available"] is False
    assert "quick smoke run" in validated_performance({"evaluation": {**model.metadata["evaluation"],
                                                                      "quick": True}})["note"]
    perf = validated_performance(model.metadata)
    assert perf["available"] and perf["within_source"][0]["source"] == "kauh"
    assert perf["pooled"]["auroc"]["low"] <= perf["pooled"]["auroc"]["value"] <= perf["pooled"]["auroc"]["high"]
    report = build_report(screen_patient(example_wavs[:1], model, patient="Z"), model, pictures=False)
    assert report.data["performance"] == perf


def test_report_output_names_and_formats(tmp_path):
    from steth_hub.commands.report import _out_path
    from steth_hub.report import report_format

    assert [report_format(n) for n in ("a.pdf", "a.HTML", "a.json", "a.fhir.json")] == ["pdf", "html", "json", "fhir"]
    with pytest.raises(ConfigError, match="report.pdf"):
        report_format("a.docx")
    assert _out_path("out/r.fhir.json", "P 1/x").name == "r-P_1_x.fhir.json"


# --------------------------------------------------------------------------- the clinician's workflow
@pytest.mark.slow
@pytest.mark.shared_data
def test_clinician_workflow_kauh_and_icbhi_patients(shared_data, tmp_path):
    """One KAUH patient (three filters, one site) and one ICBHI patient: command -> PDF + FHIR JSON,
    with the default model (whatever it is), read back and validated."""
    import pypdfium2 as pdfium

    from steth_hub.cli import main
    from steth_hub.report import validate_fhir

    from steth_hub.hub import DEFAULT_MODEL, EMBEDDED

    # the default model; while a new default is not trained yet, another shipped model
    trained = [name for name, folder in EMBEDDED.items() if (folder / "steth.json").is_file()]
    if not trained:
        pytest.skip("no shipped model is trained yet")
    model = ["--model", trained[0]] if DEFAULT_MODEL not in trained else []
    kauh = sorted((shared_data / "kauh").glob("?P101_*.wav"))
    icbhi = sorted((shared_data / "icbhi").glob("149_1b1_Al_sc_Meditron*.wav"))
    assert len(kauh) == 3 and len(icbhi) == 2
    runner = CliRunner()
    for pid, files, extra in (("K101", kauh, ["--sex", "F", "--age", "12"]), ("I149", icbhi, [])):
        pdf, fhir = tmp_path / f"{pid}.pdf", tmp_path / f"{pid}.fhir.json"
        out = runner.invoke(main, ["report", "--patient", pid, *map(str, files), *extra, *model, "--quiet",
                                   "--out", str(pdf), "--out", str(fhir)])
        assert out.exit_code == 0, out.output
        bundle = json.loads(fhir.read_text())
        validate_fhir(bundle)
        doc = pdfium.PdfDocument(str(pdf))
        try:
            text = doc[0].get_textpage().get_text_range()
            assert len(doc) == 1 and pid in text and "not a diagnosis" in text
        finally:
            doc.close()
        for annotation in ANNOTATIONS:
            assert annotation not in fhir.read_text() and annotation not in text and annotation not in out.output
    # KAUH: three filters of one site, all screened; ICBHI: the second file is the same audio, counted once
    kauh_result = json.loads(runner.invoke(main, ["screen", "--patient", "K101", *map(str, kauh), *model, "--json"]).output)
    rows = kauh_result["patients"][0]["recordings"]
    assert [r["filter"] for r in rows] == ["bell", "diaphragm", "extended"] and {r["site"] for r in rows} == {"P L M"}
    icbhi_result = json.loads(runner.invoke(main, ["screen", "--patient", "I149", *map(str, icbhi), *model, "--json"]).output)
    patient = icbhi_result["patients"][0]
    assert patient["n_recordings"] + patient["n_rejected"] == 2 and patient["probability"] is not None
    if patient["n_rejected"]:
        assert patient["rejected"][0]["code"] == "duplicate"
