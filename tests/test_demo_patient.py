"""The demo's patient mode (issue 18) and its API hygiene (issue 13), served on 127.0.0.1.

Several real recordings of one patient go in through ``gradio_client``; one patient result, the
pictures of the deciding recording and the report (PDF and FHIR JSON) to download come back.
"""

from __future__ import annotations

import json
import os
import shutil

import httpx
import pytest

from test_demo_support import ASTHMA_WAV, EXAMPLES, serve, tiled_wav, train_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]

MAX_BYTES = 150_000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("demo-model") / "tiny-mfcc")


@pytest.fixture(scope="module")
def server(tiny_dir):
    from steth_hub.demo import build_app

    app = build_app(models={"tiny": str(tiny_dir)}, max_seconds=15, max_bytes=MAX_BYTES, examples=False)
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False, download_files=False)


def _download(server: str, file_data) -> bytes:
    url = file_data["url"] if isinstance(file_data, dict) else file_data.url
    if url.startswith("/"):
        url = server.rstrip("/") + url
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return response.content


def test_patient_mode_gives_one_result_and_the_report(client, server, tiny_dir, tmp_path):
    from gradio_client import handle_file

    from steth_hub.patient import screen_patient
    from steth_hub.report import validate_fhir

    good = [ASTHMA_WAV, EXAMPLES / "kauh" / "EP32_N,N,A R L,30,M_middle10sec.wav"]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(500))
    long = tiled_wav(ASTHMA_WAV, tmp_path / "long.wav", 16.0)  # above the page's 15 s: rejected, listed
    assert long.stat().st_size < MAX_BYTES
    summary, spectrogram, explanation, pdf, fhir, record = client.predict(
        [handle_file(str(p)) for p in (*good, broken, long)], "P R M\n\nTc", "K7", "F", 38, "tiny",
        api_name="/screen_patient")
    expected = screen_patient(good, str(tiny_dir))
    assert record["result"]["probability"] == pytest.approx(expected.probability, abs=1e-9)
    assert [r["id"] for r in record["recordings"]] == ["R1", "R2"]
    assert record["recordings"][0]["site"] == "P R M"  # typed by the user
    assert record["recordings"][1]["site"] == "A R L"  # read from the KAUH name (the second line was empty)
    rejected = {r["id"]: r for r in record["rejected"]}
    assert set(rejected) == {"R3", "R4"} and rejected["R4"]["code"] == "too-long" and rejected["R3"]["site"] == "Tc"
    assert "Patient K7" in summary and "rejected" in summary and "not a diagnosis" in summary.lower()
    assert spectrogram is not None
    assert _download(server, pdf).startswith(b"%PDF")
    bundle = json.loads(_download(server, fhir))
    validate_fhir(bundle)
    for text in (summary, json.dumps(record), json.dumps(bundle)):
        assert "E W" not in text and "EP38" not in text and "broken.wav" not in text


def test_patient_mode_without_files_says_what_to_do(client):
    summary, _, _, pdf, fhir, record = client.predict([], "", "", "", None, "tiny", api_name="/screen_patient")
    assert "Upload the patient's recordings" in summary and pdf is None and fhir is None
    assert record["error"]["code"] == "no-audio"


def test_api_outputs_are_named_and_facts_are_optional(client):
    """issue 13: no ``value_17`` outputs; ``age`` (and the other facts) optional in the API."""
    info = client.view_api(print_info=False, return_format="dict")
    endpoints = info["named_endpoints"]
    for name in ("/screen", "/screen_patient"):
        returns = [r["label"] for r in endpoints[name]["returns"]]
        assert not any(label.startswith("value_") for label in returns), (name, returns)
        params = {p["parameter_name"]: p for p in endpoints[name]["parameters"]}
        assert params["age"]["parameter_has_default"], name
    screen_params = {p["parameter_name"]: p for p in endpoints["/screen"]["parameters"]}
    assert all(screen_params[k]["parameter_has_default"] for k in ("sex", "age", "site"))


def test_startup_lines_point_to_the_share_option():
    """issue 13: the log names `steth demo --share`, not Gradio's `share=True` in launch()."""
    from steth_hub.demo import startup_lines

    text = "\n".join(startup_lines("http://127.0.0.1:7860/", None))
    assert "steth demo --share" in text and "share=True" not in text and "http://127.0.0.1:7860/" in text
    assert "gradio.live" in "\n".join(startup_lines("http://127.0.0.1:7860/", "https://x.gradio.live"))


def test_steth_demo_prints_its_own_startup_lines(tiny_dir, tmp_path):
    """The real launch: Gradio's own "set share=True" line does not appear, ours does."""
    import contextlib
    import io

    from steth_hub.demo import build_app, launch
    from test_demo_support import free_port

    app = build_app(models={"tiny": str(tiny_dir)}, examples=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        launch(app, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, warm_up=False)
    try:
        text = out.getvalue()
    finally:
        app.close()
    assert "steth demo --share" in text and "share=True" not in text and "Running on local URL" in text


def test_patient_mode_sites_from_icbhi_names(tiny_dir, tmp_path):
    """Without a typed site, KAUH/ICBHI names give the site (and the KAUH filter), never the diagnosis."""
    from steth_hub.demo import ModelCatalog, PatientScreener, DemoSettings

    icbhi = EXAMPLES / "icbhi" / "113_1b1_Ar_sc_Litt3200_middle10sec.wav"  # not clipped: counted
    copy = tmp_path / icbhi.name
    shutil.copy(icbhi, copy)
    screener = PatientScreener(ModelCatalog({"tiny": str(tiny_dir)}), DemoSettings())
    summary, _, _, pdf, fhir, record = screener([str(copy)], "", "I1", "", None, "tiny")
    assert record["recordings"][0]["site"] == icbhi.name.split("_")[2] and pdf.endswith(".pdf")
