"""Issue 18: deciding in the page. The real daemon serves its review pages; a reviewer in a
real browser (headless Chromium) clicks approve and star; the manifest, the ledger and a
signed ``variant.approved`` webhook follow. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from daemon.service.webhooks import verify
from tests.browser import ARTIFACTS
from tests.conftest import make_image
from tests.e2e.conftest import wait_for
from tests.e2e.test_review_followups import CHANNELS, RULES
from tests.service.conftest import serve_receiver

pytestmark = pytest.mark.slow

SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtcmV2aWV3LXRlc3Q="


@pytest.mark.usefixtures("no_proxy")
def test_approve_star_and_refine_in_the_browser(
    browser: Any, daemon_factory: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    with serve_receiver(timeout=60) as receiver:
        daemon = daemon_factory(
            RULES,
            extra=f"""\
            review: {{enabled: true, port: 0}}
            webhooks: {{urls: ["{receiver.url}"], secret: "{SECRET}"}}
            """,
        )
        (tmp_path / "rules" / "channels.yaml").write_text(CHANNELS)
        daemon.start()
        make_image(tmp_path / "drop" / "lamp.png")
        folder = tmp_path / "out" / "look" / "lamp.png"
        wait_for(lambda: (folder / "manifest.json").exists(), 120, "the manifest")
        (listening,) = daemon.events("review server listening")
        page_url = listening["url"] + "out/look/lamp.png/index.html"

        browser.get(page_url)
        buttons = wait_for(
            lambda: [
                b
                for b in browser.find_elements(By.CSS_SELECTOR, ".review-actions button")
                if b.is_displayed()
            ],
            30,
            "the review buttons to show",
        )
        assert len(buttons) == 10  # approve, reject, star, note, refine for each of 2 variants
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "review-server-before.png"))
        first = browser.find_element(By.CSS_SELECTOR, "figure .review-actions")
        output = first.get_attribute("data-output")
        first.find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').click()
        wait_for(
            lambda: browser.find_elements(By.CSS_SELECTOR, ".badge.approved"),
            30,
            "the page to show the approval",
        )
        star = browser.find_element(
            By.CSS_SELECTOR, f'.review-actions[data-output="{output}"] button[data-action="star"]'
        )
        star.click()
        wait_for(
            lambda: browser.find_elements(By.CSS_SELECTOR, ".badge.starred"),
            30,
            "the page to show the star",
        )
        browser.save_screenshot(str(ARTIFACTS / "review-server-approved.png"))

        # The on: approved rule ran on the approved variant; the page links it.
        follow = tmp_path / "out" / "channels" / output / "manifest.json"
        wait_for(follow.exists, 120, "the on: approved rule's outputs")

        def linked() -> Any:
            browser.get(page_url)
            return browser.find_elements(By.CSS_SELECTOR, ".follow-ups a")

        link = wait_for(linked, 60, "the page to link what followed")
        assert "channels" in link[0].text  # type: ignore[index]

        # Refine the other variant with a note: round 2, linked from this page too.
        other = [
            b.get_attribute("data-output")
            for b in browser.find_elements(By.CSS_SELECTOR, ".review-actions")
            if b.get_attribute("data-output") != output
        ][0]
        wait_for(
            lambda: [b for b in browser.find_elements(By.CSS_SELECTOR, ".review-actions button")
                     if b.is_displayed()],
            30,
            "the buttons after the reload",
        )  # fmt: skip
        browser.find_element(
            By.CSS_SELECTOR, f'.review-actions[data-output="{other}"] button[data-action="refine"]'
        ).click()
        prompt = browser.switch_to.alert
        prompt.send_keys("warmer light")
        prompt.accept()
        round_two = tmp_path / "out" / "look" / other / "manifest.json"
        wait_for(round_two.exists, 120, "round 2")
        assert json.loads(round_two.read_text())["steps"][0]["prompt"].endswith("warmer light")
        wait_for(
            lambda: any("round 2" in a.text for a in linked()), 60, "round 2 linked from the page"
        )
        browser.save_screenshot(str(ARTIFACTS / "review-server-followed.png"))
        browser.get(page_url.replace("look/lamp.png/index.html", f"look/{other}/index.html"))
        banner = browser.find_element(By.CSS_SELECTOR, ".follows").text
        assert "refine round 2" in banner and "warmer light" in banner
        browser.save_screenshot(str(ARTIFACTS / "review-server-round-2.png"))

        manifest = json.loads((folder / "manifest.json").read_text())
        decision = manifest["decisions"][output]
        assert decision["decision"] == "approved" and decision["starred"] is True
        assert (tmp_path / "out" / "approved" / output).is_file()  # in its own asset's folder

        with sqlite3.connect(tmp_path / "state" / "ledger.sqlite") as db:
            rows = db.execute("SELECT action, output FROM decisions ORDER BY id").fetchall()
        assert rows == [("approve", output), ("star", output), ("refine", other)]

        # source.done, then the two decisions; each signed per Standard Webhooks.
        received = receiver.wait_for(6)  # source.done x3 (look, channels, round 2), 3 decisions
        events = []
        for delivery in received:
            headers = {k.lower(): v for k, v in delivery.headers.items()}
            assert verify(SECRET, headers, delivery.body)
            events.append(json.loads(delivery.body))
        decided = [e for e in events if e["type"].startswith("variant.")]
        assert [e["type"] for e in decided] == [
            "variant.approved",
            "variant.starred",
            "variant.refined",
        ]
        assert decided[0]["output"].endswith(Path(output).name)
        assert decided[0]["by"] == "local"
        assert daemon.stop() == 0
