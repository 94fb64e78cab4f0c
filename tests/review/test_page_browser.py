"""The review page in a real browser: headless Chromium over file://.

Skipped only when /usr/bin/chromium is missing (CI installs it: .ci/run). Needs selenium (the
``test`` extra) and /usr/bin/chromedriver; no browser is downloaded.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from daemon.outputs import page as review_page
from daemon.outputs.board import write_thumbs
from tests import waiting
from tests.browser import ARTIFACTS, CHROMIUM

from .conftest import as_manifest

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


def test_page_renders_in_chromium(browser: Any, review_sink: Any, source_picture: Any) -> None:
    sink, manifest, manifest_path = review_sink
    manifest["decisions"] = {
        "product-lifestyle/lamp/explore-sd-turbo-0.png": {"decision": "approved", "by": "ann"}
    }
    # The board's pictures, as the finalizer writes them: the root index shows these.
    write_thumbs(sink, as_manifest(manifest), lambda path: Image.open(io.BytesIO(sink.read(path))))
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


def wait_until(browser: Any, script: str, what: str, timeout: float = 30) -> Any:
    """Run ``script`` until it returns something truthy (generous: CI is a busy machine)."""
    return waiting.wait_for(lambda: browser.execute_script(script), timeout, what)


def open_page(browser: Any, review_sink: Any, change: Callable[[dict], None] | None = None) -> Any:
    sink, manifest, manifest_path = review_sink
    if change is not None:
        change(manifest)
    written = review_page.publish(sink, as_manifest(manifest), manifest_path=manifest_path)
    browser.get((sink.root / written.page).as_uri())
    return sink


def test_a_small_output_is_enlarged_in_the_lightbox_never_shrunk(
    browser: Any, review_sink: Any
) -> None:
    open_page(browser, review_sink)  # its outputs are 96x72 px
    thumb = browser.execute_script(
        "const r = document.querySelector('figure a.zoom img').getBoundingClientRect();"
        "return [r.width, r.height];"
    )
    browser.find_element("css selector", "figure a.zoom").click()
    shown = wait_until(
        browser,
        "const i = document.querySelector('#lightbox.open img');"
        "if (!i || !i.complete || !i.naturalWidth || !i.style.width) return null;"
        "const r = i.getBoundingClientRect();"
        "return [r.width, r.height, i.naturalWidth, i.classList.contains('pixelated')];",
        "the enlarged picture",
    )
    width, height, natural, pixelated = shown
    assert natural == 96
    # As large as the window allows (1400x1600 here), so larger than on the page ...
    assert width >= thumb[0] and width >= 4 * natural, (shown, thumb)
    assert abs(width / height - 96 / 72) < 0.02  # ... in its own shape ...
    assert pixelated  # ... with its pixels kept sharp, not blurred
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "review-lightbox.png"))
    browser.find_element("id", "lightbox").click()


def test_the_root_index_falls_back_to_the_sheet_without_a_thumbnail(
    browser: Any, review_sink: Any
) -> None:
    sink = open_page(browser, review_sink)  # no board thumbnails written for it
    browser.get((sink.root / "index.html").as_uri())
    browser.execute_script(
        "document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })"
    )
    src = wait_until(
        browser,
        "const i = document.querySelector('table.index img');"
        "return i && i.complete && i.naturalWidth ? i.getAttribute('src') : null;",
        "the index row's picture",
    )
    assert src == "product-lifestyle/lamp/sheet.png"
