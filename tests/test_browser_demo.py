"""The demo page in a real browser: Debian's Chromium driven by playwright, no download of any browser.

A real recording is uploaded through the page's ``input[type=file]``, the button is clicked,
and the result is read from the page; one click on an example recording screens it; every
request the page makes stays on 127.0.0.1 (analytics off, nothing fetched from elsewhere).
The microphone is tested too: Chromium's fake capture device plays a real recording into the
page's recorder, and what the browser recorded is screened.
A screenshot is saved in the test's temporary folder (and to ``$STETH_DEMO_SCREENSHOT`` when
set, which is how docs/images/demo.png is made).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from test_demo_support import ASTHMA_WAV, NORMAL_WAV, serve, tiled_wav, train_tiny_model

CHROMIUM = Path("/usr/bin/chromium")
#: the result box once screening has finished, with a result or with a message
DONE = "/P\\(asthma\\) =|Could not screen|No recording yet/"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),  # pandas 3 deprecations inside gradio
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                       "(apt-get install chromium; .ci/run installs it)"),
]


def _uploaded(response) -> bool:
    """The response to a finished upload of a recording to the demo's server."""
    return "/gradio_api/upload" in response.url and response.request.method == "POST" and response.ok


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("demo-model") / "tiny-mfcc")


@pytest.fixture(scope="module")
def page_url(tiny_dir):
    from steth_hub.demo import build_app

    app = build_app(models={"tiny": str(tiny_dir)})
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def playwright():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    try:
        yield browser
    finally:
        browser.close()


def test_upload_screen_and_read_the_result_in_chromium(browser, page_url, tiny_dir, tmp_path):
    from steth_hub.screening import screen

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(page_url, wait_until="networkidle", timeout=30_000)
    assert "Screening support, not a diagnosis" in page.inner_text("#steth-disclaimer")

    with page.expect_response(_uploaded, timeout=30_000):
        page.set_input_files("#steth-audio input[type=file]", str(ASTHMA_WAV))
    page.click("#steth-run")
    page.wait_for_function(f"document.querySelector('#steth-result').innerText.match({DONE})", timeout=60_000)
    text = page.inner_text("#steth-result")
    expected = screen(ASTHMA_WAV, model=str(tiny_dir))
    match = re.search(r"P\(asthma\) = (\d\.\d\d), (positive|negative)", text)
    assert match, text
    assert float(match.group(1)) == pytest.approx(expected.probability, abs=0.006)
    assert "screen positive" in text and ASTHMA_WAV.name.split("_")[0] in text
    assert "not a diagnosis" in text.lower()
    page.wait_for_selector("#steth-spectrogram img", timeout=30_000)
    assert "no warnings" in page.inner_text("#steth-warnings")  # 4 kHz holds all the 0-2 kHz the model reads

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("STETH_DEMO_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["STETH_DEMO_SCREENSHOT"])

    # one click on an example recording screens it
    page.get_by_text(re.compile(r"KAUH: normal \(male, 30 years")).first.click()
    page.wait_for_function(
        f"document.querySelector('#steth-result').innerText.includes({NORMAL_WAV.name.split(',')[0]!r})",
        timeout=60_000)
    assert "screen negative" in page.inner_text("#steth-result")
    assert "not asked for" in page.inner_text("#steth-result")  # no map unless asked for

    # ticking "Show where the model looked" asks for the map (none is installed for the MFCC model)
    page.check("#steth-explain input[type=checkbox]")
    page.click("#steth-run")
    page.wait_for_function("document.querySelector('#steth-result').innerText.includes('no explainer is installed')",
                           timeout=60_000)

    hosts = {urlparse(u).hostname for u in requested if urlparse(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {"127.0.0.1"}, f"the page reached beyond 127.0.0.1: {sorted(hosts)}"
    page.close()


def test_an_oversized_upload_is_refused_in_the_page(browser, page_url, tmp_path):
    big = tiled_wav(ASTHMA_WAV, tmp_path / "long-night.wav", 2800)  # 21.4 MiB of real audio, above 20 MiB
    page = browser.new_page()
    page.goto(page_url, wait_until="networkidle", timeout=30_000)
    page.set_input_files("#steth-audio input[type=file]", str(big))
    page.wait_for_function("document.body.innerText.includes('exceed the maximum allowed size')", timeout=30_000)
    assert "long-night.wav" in page.inner_text("body")
    assert "P(asthma) =" not in page.inner_text("#steth-result")
    page.close()

def test_record_from_the_microphone_and_screen_it(playwright, page_url, tmp_path):
    import soundfile as sf

    from steth_hub.audio import decode, resample

    recording = decode(ASTHMA_WAV)  # played into Chromium's fake microphone (at a rate sound cards use)
    fake_mic = tmp_path / "fake-mic.wav"
    sf.write(fake_mic, resample(recording.samples, recording.sample_rate, 48000), 48000, subtype="PCM_16")
    args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-audio-capture={fake_mic}"]
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
    try:
        page = browser.new_context(permissions=["microphone"]).new_page()
        page.goto(page_url, wait_until="networkidle", timeout=30_000)
        page.click("#steth-audio button[aria-label='Record audio']")
        page.click("#steth-audio button.record-button", timeout=10_000)
        page.wait_for_timeout(7_000)  # one 5 s clip needs 6 s after the preset trims 0.5 s at each end
        with page.expect_response(_uploaded, timeout=30_000):  # stopping sends the recording to the server
            page.click("#steth-audio button.stop-button >> nth=0")
        page.click("#steth-run")
        page.wait_for_function(f"document.querySelector('#steth-result').innerText.match({DONE})", timeout=60_000)
        text = page.inner_text("#steth-result")
        match = re.search(r"Recording: (\S+\.wav): (\d+\.\d) s at (\d+) Hz", text)
        assert match, text
        assert 6.0 <= float(match.group(2)) <= 9.0  # what the browser recorded, decoded by steth-hub
        assert re.search(r"Clips analysed: [12]\b", text)
    finally:
        browser.close()
