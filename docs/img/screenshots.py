"""Makes the screenshots of docs/review.md: a real daemon (in-process, the stub model), its
review server, and headless Chromium clicking in the page, as a reviewer would.

    .venv/bin/python docs/img/screenshots.py        # writes docs/img/review-*.png

Needs /usr/bin/chromium and chromedriver (as the browser tests do). Runs offline, in a
temporary folder; takes about a minute. Each PNG is quantized to stay well under 200 KB.
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from daemon.outputs.text import FONT_FILE  # noqa: E402
from tests.browser import chromium  # noqa: E402
from tests.integration.conftest import Harness  # noqa: E402

OUT = Path(__file__).resolve().parent
LOOK = """\
name: look
description: a product shot in three moods
match: {source: drop, include: ["**/*.png"]}
prompt: "{stem} on a sunlit oak table, editorial product photo"
steps:
  - {name: explore, models: [studio-a, studio-b], variants: 3}
  - {name: brand, input: explore, pick: [0], model: studio-a, seeds: [11],
     references: ["brand/*.png"]}
output: {sink: out}
"""
CHANNELS = """\
name: channels
on: approved
after: [look]
prompt: "{parent_key} as a web banner"
steps:
  - {name: square, model: studio-a, seeds: [3]}
output: {sink: out}
"""
PROFILES = """\
profiles:
  studio-a: {task: stub, model: stub, max_side: 320}
  studio-b: {task: stub, model: stub-b, max_side: 320}
review: {enabled: true, port: 0}
"""


def product(path: Path, hue: int) -> None:
    """A picture with some shape to it: a lamp-like silhouette on a gradient."""
    im = Image.new("RGB", (480, 360))
    draw = ImageDraw.Draw(im)
    for y in range(360):
        t = y / 360
        draw.line([(0, y), (480, y)], fill=(int(230 - 60 * t), int(220 - 40 * t), 200 - hue))
    draw.polygon([(190, 90), (290, 90), (330, 190), (150, 190)], fill=(40 + hue, 90, 140))
    draw.rectangle([232, 190, 248, 300], fill=(60, 60, 60))
    draw.ellipse([180, 290, 300, 320], fill=(70, 70, 70))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def swatch(path: Path, colour: tuple[int, int, int], label: str) -> None:
    im = Image.new("RGB", (200, 200), colour)
    ImageDraw.Draw(im).ellipse([50, 50, 150, 150], fill=(250, 250, 245))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def save(browser: Any, name: str, crop_height: int | None = None, element: Any = None) -> None:
    """The window (or one element) as a PNG under docs/img, quantized (a screenshot is flat
    colour mostly)."""
    shot = (element or browser).screenshot_as_png if element else browser.get_screenshot_as_png()
    im = Image.open(io.BytesIO(shot)).convert("RGB")
    if crop_height:
        im = im.crop((0, 0, im.width, min(im.height, crop_height)))
    small = im.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    target = OUT / name
    small.save(target, optimize=True)
    print(f"{target.relative_to(ROOT)}: {target.stat().st_size // 1024} KB")


def wait(predicate: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def star(browser: Any, by: Any) -> None:
    """Star the fourth variant once its buttons show (the page reloaded after the approval)."""
    button = '.review-actions:not([hidden]) button[data-action="star"]'
    wait(lambda: len(browser.find_elements(by.CSS_SELECTOR, button)) > 3, "the buttons")
    browser.find_elements(by.CSS_SELECTOR, button)[3].click()
    try:
        wait(lambda: browser.find_elements(by.CSS_SELECTOR, ".badge.starred"), "the star", 30)
    except SystemExit:
        said = [e.text for e in browser.find_elements(by.CSS_SELECTOR, ".review-status")]
        raise SystemExit(f"the star did not show; the page said {[t for t in said if t]}") from None


def fonts_config(tmp: Path) -> Path:
    """A fontconfig file adding the sheet font, so the browser draws the same letters."""
    conf = tmp / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
        f"<include>/etc/fonts/fonts.conf</include><dir>{FONT_FILE.parent}</dir></fontconfig>"
    )
    return conf


def main() -> None:
    from selenium.webdriver.common.by import By

    tmp = Path(tempfile.mkdtemp(prefix="darkroom-shots-"))
    import os

    os.environ["FONTCONFIG_FILE"] = str(fonts_config(tmp))
    h = Harness(tmp, ROOT / ".pytest_cache" / "darkroom-models")
    swatch(h.rules_dir / "brand" / "palette-warm.png", (196, 92, 52), "warm")
    swatch(h.rules_dir / "brand" / "logo-mark.png", (30, 60, 110), "logo")
    h.rule("look.yaml", LOOK)
    h.rule("channels.yaml", CHANNELS)
    app = h.start(PROFILES)
    try:
        names = ["desk-lamp", "reading-lamp", "floor-lamp", "Crème brûlée – Łódź – 東京の夜 – 서울"]
        for i, name in enumerate(names):
            product(h.drop / "spring" / f"{name}.png", 30 * i)
        wait(lambda: len(list(h.out.glob("look/**/manifest.json"))) == 4, "four manifests")
        assert app.review_server is not None
        base = app.review_server.url
        browser_gen = chromium(tmp / "profile")
        browser = next(browser_gen)
        browser.set_window_size(1280, 1000)
        manifest = sorted(h.out.glob("look/**/desk-lamp*/manifest.json"))[0]
        page = manifest.parent.relative_to(h.out) / "index.html"
        browser.get(f"{base}out/{page.as_posix()}")
        wait(
            lambda: [
                b
                for b in browser.find_elements(By.CSS_SELECTOR, ".review-actions button")
                if b.is_displayed()
            ],
            "the review buttons",
        )
        save(browser, "review-page.png")
        figures = browser.find_elements(By.CSS_SELECTOR, "figure .review-actions")
        figures[1].find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').click()
        wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".badge.approved"), "the approval")
        star(browser, By)
        # The channels rule runs on the approved variant; the page lists it when it commits.
        wait(lambda: list(h.out.glob("channels/**/manifest.json")), "the channels rule")
        wait(
            lambda: browser.refresh() or browser.find_elements(By.CSS_SELECTOR, ".follow-ups li"),
            "What followed",
        )
        browser.execute_script("document.querySelector('#step-explore').scrollIntoView()")
        save(browser, "review-decided.png")
        brand = browser.find_element(By.CSS_SELECTOR, "#step-brand")
        save(browser, "review-references.png", crop_height=620, element=brand)
        followed = browser.find_element(By.CSS_SELECTOR, ".follow-ups")
        save(browser, "review-followed.png", element=followed)
        # The follow-up's own page: made from the approved variant.
        channels = sorted(h.out.glob("channels/**/manifest.json"))[0]
        browser.get(f"{base}out/{(channels.parent / 'index.html').relative_to(h.out).as_posix()}")
        save(browser, "review-channels.png", crop_height=420)

        browser.get(f"{base}out/boards/look/index.html")
        wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".out img"), "the board")
        save(browser, "review-board.png", crop_height=620)
        browser.get(f"{base}out/index.html")
        wait(lambda: browser.find_elements(By.CSS_SELECTOR, "table.index img"), "the index")
        save(browser, "review-index.png", crop_height=620)
        for leftover in browser_gen:  # closes the browser
            del leftover
        sheet = Image.open(manifest.parent / "sheet.png").convert("RGB")
        sheet.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(
            OUT / "review-sheet.png", optimize=True
        )
        print(f"docs/img/review-sheet.png: {(OUT / 'review-sheet.png').stat().st_size // 1024} KB")
        # Names in any language: the sheet of the fourth source, its header and first row.
        (other,) = h.out.glob("look/**/Crème*/sheet.png")
        sheet = Image.open(other).convert("RGB")
        sheet = sheet.crop((0, 0, sheet.width, min(sheet.height, 440)))
        sheet.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(
            OUT / "review-sheet-languages.png", optimize=True
        )
    finally:
        h.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    print(textwrap.dedent("done"))
