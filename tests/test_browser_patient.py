"""The demo's patient tab in a real Chromium: several recordings in, one result and the report out.

Needs Debian's chromium (``apt-get install chromium``) and the playwright package; skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from test_demo_support import EXAMPLES, serve, train_tiny_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                       "(apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    from steth_hub.demo import build_app

    tiny = train_tiny_model(tmp_path_factory.mktemp("demo-model") / "tiny-mfcc")
    app = build_app(models={"tiny": str(tiny)}, examples=False)
    with serve(app) as url:
        yield url


def test_patient_tab_screens_several_recordings_and_offers_the_report(page_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    files = sorted((EXAMPLES / "kauh").glob("*.wav"))[:3]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(page_url, wait_until="networkidle", timeout=30_000)
            page.get_by_role("tab", name="One patient, several recordings").click()
            page.set_input_files("#steth-patient-files input[type=file]", [str(f) for f in files])
            page.wait_for_function("document.querySelector('#steth-patient-files').innerText.includes('.wav')",
                                   timeout=30_000)
            page.fill("#steth-patient-run >> xpath=ancestor::div[contains(@class,'column')][1]//textarea >> nth=0",
                      "P L M\nP L M\nP L M")
            page.get_by_label("Patient ID (optional)").fill("K-demo")
            page.click("#steth-patient-run")
            page.wait_for_function("document.querySelector('#steth-patient-result').innerText"
                                   ".match(/Patient K-demo: P\\(asthma\\)|Could not/)", timeout=90_000)
            text = page.inner_text("#steth-patient-result")
            assert "Patient K-demo: P(asthma)" in text and "R3" in text and "not a diagnosis" in text.lower()
            assert "E W" not in text and "middle10sec" not in text  # file names never shown
            page.wait_for_function("document.querySelector('#steth-patient-pdf').innerText.includes('.pdf')",
                                   timeout=30_000)
            shot = tmp_path / "patient.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            if os.environ.get("STETH_PATIENT_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["STETH_PATIENT_SCREENSHOT"])
            page.close()
        finally:
            browser.close()
