"""The review page in a real browser: headless Chromium over file://.

Skipped only when /usr/bin/chromium is missing (CI installs it: .ci/run). Needs selenium (the
``test`` extra) and /usr/bin/chromedriver; no browser is downloaded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from daemon.outputs import page as review_page

from .conftest import as_manifest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)",
)


# Every <img> with a src (the lightbox's is empty until opened), made eager (some are lazy), once
# loaded or failed: [[src, naturalWidth], ...].
LOAD_ALL = """const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images).filter(i => i.getAttribute('src'));
imgs.forEach(i => { i.loading = 'eager'; });
Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))
  .then(() => done(imgs.map(i => [i.getAttribute('src'), i.naturalWidth])));"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')"
    )
    from selenium.webdriver.chrome.service import Service

    if not CHROMEDRIVER.exists():
        pytest.fail(
            f"{CHROMIUM} exists but {CHROMEDRIVER} does not: apt-get install chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1600",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch anything
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_page_renders_in_chromium(browser: Any, review_sink: Any, source_picture: Any) -> None:
    sink, manifest, manifest_path = review_sink
    manifest["decisions"] = {
        "product-lifestyle/lamp/explore-sd-turbo-0.png": {"decision": "approved", "by": "ann"}
    }
    written = review_page.publish(
        sink, as_manifest(manifest), manifest_path=manifest_path, source_image=source_picture
    )
    page = sink.root / written.page
    browser.get(page.as_uri())
    images = browser.execute_async_script(LOAD_ALL)
    assert len(images) == 13  # source preview + 11 compare variants + the animated WebP
    broken = [src for src, width in images if not width]
    assert broken == []
    assert browser.execute_script("return document.querySelectorAll('.badge.approved').length") == 1
    if browser.execute_script("return document.querySelectorAll('video').length"):
        # poster shown and metadata read: the clip's relative URL resolves
        state = browser.execute_async_script(
            """const done = arguments[arguments.length - 1]; const v = document.querySelector('video');
            const report = () => done([v.readyState, v.error && v.error.code, v.duration]);
            if (v.readyState >= 1 || v.error) report(); else { v.onloadedmetadata = report; v.onerror = report;
              setTimeout(report, 5000); v.load(); }"""
        )
        assert state[1] is None and state[0] >= 1, state
    # the lightbox opens on click and closes on a second click
    browser.find_element("css selector", "a.zoom").click()
    assert browser.execute_script(
        "return document.getElementById('lightbox').classList.contains('open')"
    )
    browser.find_element("id", "lightbox").click()
    assert not browser.execute_script(
        "return document.getElementById('lightbox').classList.contains('open')"
    )
    browser.execute_script("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "review-page.png"))
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []

    browser.get((sink.root / "index.html").as_uri())
    images = browser.execute_async_script(LOAD_ALL)
    assert images and all(width for _, width in images), images
    assert [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"] == []
