"""The demo with a model that reads the patient facts: the embedded VLM ``steth/vlm-asthma``.

A vision-language classifier writes the patient's sex, age and recording site into its prompt, so on
the page those facts are model inputs for it (and only for it): they are registered for the
recording before it is screened, the result says which went into the prompt and which were left out,
and shows the answer the model writes. A model that does not read them is not changed by them.
Real example recordings, the embedded models (no network), no server: about 15 s.
"""

from __future__ import annotations

import functools
import json

import pytest

from steth_hub import demo
from test_demo_support import ASTHMA_WAV, NORMAL_WAV, tiled_wav

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VLM = "steth/vlm-asthma"
DEFAULT = "steth/efficientat-asthma"


@pytest.fixture(scope="module")
def catalog():
    catalog = demo.ModelCatalog({"vlm": VLM, "default": DEFAULT})
    for name, entry in catalog.entries.items():
        if entry.error is not None:
            pytest.skip(f"the embedded {entry.source} is not in this checkout: {entry.error.message}")
    return catalog


@pytest.fixture(scope="module")
def screener(catalog):
    return demo.Screener(catalog, demo.DemoSettings())


def _prompt(record: dict) -> dict:
    return json.loads(record["vlm"]["prompt"])


def test_the_facts_note_follows_the_model_chosen(catalog):
    """Before any weights are loaded (the plugin's class says it): facts are model inputs for the VLM only."""
    assert catalog.uses_facts("vlm") and not catalog.uses_facts("default")
    assert "vlm" not in catalog._loaded and "default" not in catalog._loaded  # nothing loaded to know it
    assert demo.facts_note(True) == demo.PATIENT_NOTE_PROMPT and "part of its input" in demo.PATIENT_NOTE_PROMPT
    assert demo.facts_note(False) == demo.PATIENT_NOTE and "**not** used by the model" in demo.PATIENT_NOTE
    assert not demo.ModelCatalog({"gone": "/no/such/model"}).uses_facts("gone")


def test_the_vlm_gets_the_page_facts_in_its_prompt_and_the_page_says_which(screener, catalog):
    """The same recording with two ages: two prompts, two results, and the text lists the facts used."""
    young = screener(str(ASTHMA_WAV), "vlm", "M", 38, "P R M")
    old = screener(str(ASTHMA_WAV), "vlm", "M", 70, "P R M")
    for (summary, _, spectrogram, _, record), age in ((young, 38), (old, 70)):
        assert "error" not in record, record
        assert _prompt(record) == {
            "task": "Write a diagnosis for this patient by analyzing the respiratory sound spectrogram.",
            "patient_sex": "M", "patient_age": age, "record_point": "posterior right middle",
            "spectrogram_bins_width": "[0.025, 0.1, 0.175]"}
        assert record["vlm"]["omitted"] == [] and record["patient"]["model_input"] is True
        assert "**Patient facts (model inputs: written into its prompt):** male" in summary
        assert (f"**In the model's prompt:** sex M, age {age}, recording site posterior right middle"
                in summary), summary
        assert "not model inputs" not in summary and "left out" not in summary
        answer = record["vlm"]["answer"]  # the model's own words, one answer per clip
        assert len(answer["texts_per_clip"]) == record["n_clips"] == 3
        assert all(label in ("asthma", "not_asthma", None) for label in answer["labels_per_clip"])
        assert f'**The model writes:** "{answer["texts_per_clip"][0]}"' in summary
        assert "E W" not in record["vlm"]["prompt"] and spectrogram is not None
    assert young[4]["vlm"]["prompt"] != old[4]["vlm"]["prompt"]
    assert young[4]["probability"] != pytest.approx(old[4]["probability"], abs=1e-6)  # the age is read
    # what the page shows is what steth_hub.screen gives once the same facts are registered
    from steth_builtin.vlm_screen import register_facts

    from steth_hub.screening import screen

    model = catalog.get("vlm")
    register_facts(model, ASTHMA_WAV, sex="M", age=38, site="P R M")
    assert screen(ASTHMA_WAV, model=model).probability == pytest.approx(young[4]["probability"], abs=1e-9)
    # the map: the explainer's own images are prompted with the same facts, and the result is the same
    summary, _, _, picture, record = screener(str(ASTHMA_WAV), "vlm", "M", 38, "P R M", True)
    assert record["explanation"]["explainer"] == "integrated-gradients" and picture is not None
    assert record["probability"] == pytest.approx(young[4]["probability"], abs=1e-9)
    assert model._context is None  # the facts the map used were for that request only


def test_facts_not_given_are_left_out_never_guessed_or_kept_from_an_earlier_visitor(screener):
    """Nothing typed: no fact in the prompt, not the earlier request's, nor the site in the file's name."""
    told = screener(str(ASTHMA_WAV), "vlm", "F", 12, "Tc")[4]
    summary, _, _, _, record = screener(str(ASTHMA_WAV), "vlm")
    assert set(_prompt(record)) == {"task", "spectrogram_bins_width"}  # ASTHMA_WAV's name says P R M: not read
    assert record["vlm"]["omitted"] == ["patient_sex", "patient_age", "record_point"]
    assert "**In the model's prompt:** no patient facts; left out (not given): sex, age, recording site" in summary
    assert record["probability"] != pytest.approx(told["probability"], abs=1e-6)
    # partly told: what went in and what did not
    summary, _, _, _, record = screener(str(NORMAL_WAV), "vlm", "", 30.5, "")
    assert _prompt(record)["patient_age"] == 30.5 and record["vlm"]["omitted"] == ["patient_sex", "record_point"]
    assert "age 30.5; left out (not given): sex, recording site" in summary


def test_a_model_that_does_not_read_the_facts_is_unchanged_by_them(screener):
    """The default model (ONNX Runtime, no prompt): the facts are shown and saved, never model inputs."""
    from steth_hub.runtime import OnnxClassifier

    young = screener(str(ASTHMA_WAV), "default", "M", 38, "P R M")
    old = screener(str(ASTHMA_WAV), "default", "F", 70, "Tc")
    assert isinstance(screener.catalog.get("default"), OnnxClassifier)
    assert young[4]["probability"] == old[4]["probability"]
    for summary, _, _, _, record in (young, old):
        assert "vlm" not in record and record["patient"]["model_input"] is False
        assert "**Patient facts (not model inputs):**" in summary and "prompt" not in summary
        assert "The model writes" not in summary


def test_the_patient_tab_gives_each_recording_the_facts_and_its_site(catalog, tmp_path, monkeypatch):
    """Patient sex and age plus each recording's site (typed, else its name's) in every prompt; the summary
    and the JSON say so; a recording over the page's limits is rejected before anything reads it."""
    import steth_hub.report

    # the deciding recording's pictures (integrated gradients through the VLM) take ~15 s: not this test's subject
    monkeypatch.setattr(steth_hub.report, "build_report",
                        functools.partial(steth_hub.report.build_report, pictures=False))
    long = tiled_wav(ASTHMA_WAV, tmp_path / "long.wav", 16.0)
    screener = demo.PatientScreener(catalog, demo.DemoSettings(max_seconds=15))
    files = [str(ASTHMA_WAV), str(NORMAL_WAV), str(long)]
    results = {age: screener(files, "P L L\n", "K9", "F", age, "vlm") for age in (40, 70)}
    for age, (summary, _, _, pdf, fhir, record) in results.items():
        assert "error" not in record and pdf.endswith(".pdf"), record
        assert set(record["vlm"]) == {"R1", "R2"} and [r["id"] for r in record["rejected"]] == ["R3"]
        first, second = (_prompt({"vlm": record["vlm"][r]}) for r in ("R1", "R2"))
        assert (first["patient_sex"], first["patient_age"], first["record_point"]) == ("F", age, "posterior left lower")
        assert second["record_point"] == "anterior right lower"  # from the KAUH name's site field
        assert record["patient"]["model_input"] is True
        assert "**Patient facts (model inputs: written into its prompt):** female" in summary
        assert f"**R1, in the model's prompt:** sex F, age {age}, recording site posterior left lower" in summary
        assert "**the model writes:**" in summary and "not model inputs" not in summary
        assert "E W" not in summary and "EP38" not in summary  # file names are never shown
    assert results[40][5]["result"]["probability"] != pytest.approx(results[70][5]["result"]["probability"], abs=1e-6)
    # the default model in the same tab: facts shown, not model inputs, no prompt
    summary, *_, record = screener(files[:1], "", "K9", "F", 40, "default")
    assert "vlm" not in record and "**Patient facts (not model inputs):**" in summary


@pytest.mark.filterwarnings("ignore:'click.utils:DeprecationWarning")  # typer, imported by gradio
def test_the_page_changes_the_facts_note_with_the_model(catalog):
    """Both tabs' facts notes: the VLM (listed first, so chosen) says model inputs; choosing another says not."""
    app = demo.build_app(models={"vlm": VLM, "default": DEFAULT}, examples=False)
    notes = {block._id: block for block in app.blocks.values()
             if getattr(block, "elem_id", None) in ("steth-facts-note", "steth-patient-facts-note")}
    assert len(notes) == 2 and all(note.value == demo.PATIENT_NOTE_PROMPT for note in notes.values())
    changers = [fn for fn in app.fns.values() if [o._id for o in fn.outputs] in ([i] for i in notes)]
    assert len(changers) == 2
    for fn in changers:
        assert fn.fn("default") == demo.PATIENT_NOTE and fn.fn("vlm") == demo.PATIENT_NOTE_PROMPT
        assert fn.api_visibility == "private"  # not an API endpoint of the page
