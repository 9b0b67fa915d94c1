"""The demo page in a real browser: Debian's Chromium driven by playwright, no download of any browser.

A real recording is uploaded through the page's ``input[type=file]``, the button is clicked,
and the result is read from the page; one click on an example recording screens it; every
request the page makes stays on 127.0.0.1 (analytics off, nothing fetched from elsewhere).
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

from test_demo_support import ASTHMA_WAV, NORMAL_WAV, serve, train_tiny_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),  # pandas 3 deprecations inside gradio
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                       "(apt-get install chromium; .ci/run installs it)"),
]


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
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def test_upload_screen_and_read_the_result_in_chromium(browser, page_url, tiny_dir, tmp_path):
    from steth_hub.screen import screen

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(page_url, wait_until="networkidle", timeout=30_000)
    assert "Screening support, not a diagnosis" in page.inner_text("#steth-disclaimer")

    page.set_input_files("#steth-audio input[type=file]", str(ASTHMA_WAV))
    page.wait_for_selector("#steth-audio audio, #steth-audio .waveform-container", state="attached",
                           timeout=30_000)  # the upload has arrived
    page.click("#steth-run")
    page.wait_for_function("document.querySelector('#steth-result').innerText.includes('P(asthma) =')",
                           timeout=60_000)
    text = page.inner_text("#steth-result")
    expected = screen(ASTHMA_WAV, model=str(tiny_dir))
    match = re.search(r"P\(asthma\) = (\d\.\d\d), (positive|negative)", text)
    assert match, text
    assert float(match.group(1)) == pytest.approx(expected.probability, abs=0.006)
    assert "screen positive" in text and ASTHMA_WAV.name.split("_")[0] in text
    assert "not a diagnosis" in text.lower()
    page.wait_for_selector("#steth-spectrogram img", timeout=30_000)
    assert "low sample rate" in page.inner_text("#steth-warnings")

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

    hosts = {urlparse(u).hostname for u in requested if urlparse(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {"127.0.0.1"}, f"the page reached beyond 127.0.0.1: {sorted(hosts)}"
    page.close()
