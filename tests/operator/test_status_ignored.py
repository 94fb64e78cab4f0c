"""``darkroom status`` (text and --json) counts the inputs no rule took and lists the latest
ones with their reason: an ignored file has a visible record, not only a log line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from daemon.queue.ledger import Ledger
from tests.conftest import make_image
from tests.e2e.conftest import Daemon, wait_for
from tests.e2e.conftest import daemon_factory as daemon_factory  # the real daemon, as a fixture
from tests.operator.test_status_json import setup as seeded_config
from tests.operator.test_status_json import status

PNG_ONLY = """\
name: png-only
match: {source: drop, include: ["**/*.png"], min_width: 48}
steps: [{name: one, model: stub, seeds: [1]}]
output: {sink: out}
"""


def test_status_shows_what_the_running_daemon_ignored(
    tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    daemon = daemon_factory(PNG_ONLY, quiet_period=0.2)
    daemon.start()
    (tmp_path / "drop" / "notes.pdf").write_bytes(b"%PDF-1.4 not for a rule")
    make_image(tmp_path / "drop" / "tiny.png", size=(16, 16))  # under min_width
    make_image(tmp_path / "drop" / "hero.png")  # taken: not listed
    said = "no rule matches; ignored (darkroom match explains why)"
    wait_for(
        lambda: {e["key"] for e in daemon.events(said)} >= {"notes.pdf", "tiny.png"},
        60,
        "notes.pdf and tiny.png to be ignored",
    )
    wait_for(lambda: daemon.events("queued", key="hero.png"), 60, "hero.png to be queued")
    config = daemon.config

    text = status(config)
    assert text.returncode == 0, text.stderr
    assert "ignored 2 (no rule took them; 'darkroom match FILE' says why):" in text.stdout
    assert "drop:notes.pdf (" in text.stdout and "): no rule matches" in text.stdout
    assert "drop:tiny.png (" in text.stdout and "hero.png (" not in text.stdout
    # Each rule's reason, so the user knows what to change without running `match`.
    assert "width 16 < min_width 48" in text.stdout

    as_json = status(config, "--json")
    assert as_json.returncode == 0, as_json.stderr
    ignored = json.loads(as_json.stdout)["ignored"]
    assert ignored["total"] == 2
    assert {item["key"] for item in ignored["items"]} == {"notes.pdf", "tiny.png"}
    for item in ignored["items"]:
        assert item["source"] == "drop" and item["reason"].startswith("no rule matches (")
        assert item["at"].endswith("Z") and item["size"] > 0
    assert daemon.stop() == 0


def _seed_ignored(config: Path, count: int) -> None:
    ticks = iter(range(1_700_000_000, 1_700_001_000))  # one second apart: a fixed order
    ledger = Ledger(config.parent / "state" / "ledger.sqlite", clock=lambda: float(next(ticks)))
    for i in range(count):
        ledger.mark_seen("drop", f"other-{i}.pdf", 10 + i, i, None, "ignored: no rule matches")
    ledger.mark_seen(
        "drop", "caf\\xe9.png", 5, 0, None, "ignored: the file name is not valid UTF-8"
    )
    ledger.mark_seen("drop", "taken.png", 5, 0, "ab" * 32, "submitted")
    ledger.close()


def test_the_ignored_list_is_cut_with_a_note_and_latest_first(tmp_path: Path) -> None:
    config = seeded_config(tmp_path)
    _seed_ignored(config, 3)

    cut = status(config, "--json", "--limit", "2")
    ignored = json.loads(cut.stdout)["ignored"]
    assert ignored["total"] == 4 and len(ignored["items"]) == 2
    assert ignored["items"][0]["key"] == "caf\\xe9.png"  # the latest first
    assert ignored["items"][0]["reason"] == "the file name is not valid UTF-8"
    assert "showing 2 of 4 ignored (use --limit)" in cut.stderr

    text = status(config, "--limit", "2")
    assert "ignored 4 (no rule took them; 'darkroom match FILE' says why; showing 2 of 4" in (
        text.stdout
    )
    assert "taken.png" not in text.stdout


def test_nothing_ignored_keeps_the_text_quiet_and_the_json_key(tmp_path: Path) -> None:
    config = seeded_config(tmp_path)
    lines = status(config).stdout.splitlines()
    assert not [line for line in lines if line.startswith("ignored")]
    assert json.loads(status(config, "--json").stdout)["ignored"] == {"total": 0, "items": []}
