"""The demo served on 127.0.0.1 and driven with gradio_client and plain HTTP, as a visitor's browser would.

One app (a model trained here, tight limits) serves every test in this module; ``steth demo``
itself is started as a separate process and stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from test_demo_support import ASTHMA_WAV, NOT_UPLOADED_WAV, free_port, serve, tiled_wav, train_tiny_model

# gradio's queue statistics use pandas options that pandas 3 deprecates: not ours to fix
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]

MAX_BYTES = 150_000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("demo-model") / "tiny-mfcc")


@pytest.fixture(scope="module")
def server(tiny_dir):
    from steth_hub.demo import build_app

    app = build_app(models={"tiny": str(tiny_dir)}, max_seconds=15, max_bytes=MAX_BYTES)
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False, download_files=False)


def _screen(client, path, *facts):
    from gradio_client import handle_file

    sex, age, site = (facts + ("", None, ""))[:3] if facts else ("", None, "")
    return client.predict(handle_file(str(path)), "tiny", sex, age, site, api_name="/screen")


def test_a_real_recording_gets_probability_and_decision(client, tiny_dir):
    from steth_hub.screening import screen

    summary, warnings, spectrogram, explanation, record = _screen(client, ASTHMA_WAV, "M", 38, "P R M")
    expected = screen(ASTHMA_WAV, model=str(tiny_dir))
    assert record["probability"] == pytest.approx(expected.probability, abs=1e-9)
    assert record["decision"] is expected.decision is True and record["label"] == "asthma"
    assert record["patient"]["site"] == "P R M" and record["source"] == ASTHMA_WAV.name
    assert "P(asthma) = " in summary and "screen positive" in summary and "not a diagnosis" in summary
    assert "no warnings" in warnings  # 4 kHz holds all the 0-2 kHz the model reads
    assert spectrogram is not None and spectrogram["url"]  # the picture came back as a served file


def test_a_corrupt_upload_gets_a_message_not_a_trace(client, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(2000))
    summary, _, spectrogram, _, record = _screen(client, bad)
    assert record == {"error": {"code": "corrupt", "message": record["error"]["message"],
                                "fix": record["error"]["fix"], "file": "broken.wav"}}
    assert "Could not screen broken.wav" in summary and "cannot decode" in summary
    assert "Traceback" not in summary and spectrogram is None


def test_an_oversized_upload_is_refused(client, server, tmp_path):
    big = tiled_wav(ASTHMA_WAV, tmp_path / "big.wav", 25.0)  # 200 kB of real audio, above 150 kB
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        _screen(client, big)  # the client reads the server's limit and refuses to send it
    with open(big, "rb") as fh:  # a client that ignores the limit is refused by the server
        response = httpx.post(server + "gradio_api/upload", files={"files": ("big.wav", fh, "audio/wav")},
                              timeout=30)
    assert response.status_code == 413, response.text
    assert "maximum" in response.text.lower()


def test_a_too_long_recording_is_refused_from_its_header(client, tmp_path):
    long = tiled_wav(ASTHMA_WAV, tmp_path / "long.wav", 16.0)  # under the size limit, over 15 s
    summary, *_, record = _screen(client, long)
    assert record["error"]["code"] == "too-long" and "16 s, above the 15 s limit" in summary


def test_the_app_reads_no_file_that_was_not_uploaded(server):
    # the screening endpoint refuses a server path it was not sent as an upload
    body = {"data": [{"path": str(NOT_UPLOADED_WAV), "meta": {"_type": "gradio.FileData"}}, "tiny", "", None, ""]}
    event = httpx.post(server + "gradio_api/call/screen", json=body, timeout=30).json()["event_id"]
    stream = httpx.get(server + f"gradio_api/call/screen/{event}", timeout=60).text
    assert "event: error" in stream and "probability" not in stream
    # and the file route serves neither that recording nor the project's files
    for path in (NOT_UPLOADED_WAV, Path(__file__), Path(sys.executable)):
        assert httpx.get(server + f"gradio_api/file={path}", timeout=30).status_code == 403


def test_requests_are_queued_one_at_a_time_and_analytics_are_off(client, server, monkeypatch):
    from steth_hub import demo

    config = httpx.get(server + "config", timeout=30).json()
    assert config["analytics_enabled"] is False
    assert next(d for d in config["dependencies"] if d.get("api_name") == "screen")["queue"] is True
    analyse, lock, running, peak = demo.Screener.analyse, threading.Lock(), [0], [0]

    def counted(self, *args, **kwargs):  # the app runs in this process: count screenings in flight
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.3)
            return analyse(self, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(demo.Screener, "analyse", counted)
    jobs = [client.submit(*_args(), api_name="/screen") for _ in range(3)]  # three visitors at once
    results = [job.result(timeout=120) for job in jobs]
    assert len({r[4]["probability"] for r in results}) == 1 and "error" not in results[0][4]
    assert peak[0] == 1  # concurrency 1: the others waited in the queue


def _args():
    from gradio_client import handle_file

    return handle_file(str(ASTHMA_WAV)), "tiny", "", None, ""


def test_steth_demo_serves_the_page(tiny_dir, tmp_path):
    port = free_port()
    steth = Path(sys.executable).with_name("steth")
    cmd = [str(steth), "demo", "--port", str(port), "--model", str(tiny_dir), "--max-mb", "1"]
    log = (tmp_path / "demo.log").open("w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 90
        config = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                config = httpx.get(url + "config", timeout=5).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        log.seek(0)
        assert config is not None, f"steth demo did not serve {url}: {log.read()}"
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "steth-hub demo" in page.text
        dropdown = next(c for c in config["components"] if c["props"].get("elem_id") == "steth-model")
        labels = [choice[0] for choice in dropdown["props"]["choices"]]
        assert labels[0].startswith("steth/efficientat-asthma") and "tiny-mfcc (mfcc-logreg)" in labels
        assert config["max_file_size"] == 2**20
        texts = " ".join(str(c["props"].get("value")) for c in config["components"])
        assert "mfcc-logreg" in texts and "Installed classifier plugins" in texts
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the session this test started, and only it
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        log.close()
