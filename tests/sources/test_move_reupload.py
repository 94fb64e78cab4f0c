"""``on_success: move`` and a file re-uploaded under a name already in the processed folder.

The processed folder keeps every file ever moved there: a second ``hero.png`` (new bytes, a
new round of the same asset) goes beside the first under a free name, its sidecar renamed
with it, and the log says where. Nothing there is replaced, and nothing processed is left
behind in the drop folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.errors import InputChanged
from daemon.sources.folder import FolderSource
from tests.conftest import make_image
from tests.integration.conftest import Harness
from tests.integration.conftest import harness as harness  # the in-process daemon fixture

MOVE_RULE = """\
name: r
match: {source: drop}
steps: [{name: one, model: stub, seeds: [1]}]
output: {sink: out, on_success: move}
"""


def _processed(drop: Path) -> dict[str, bytes]:
    folder = drop / ".processed"
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_reupload_is_moved_beside_the_first_never_over_it(harness: Harness) -> None:
    harness.rule("r.yaml", MOVE_RULE)
    harness.start()
    first = make_image(harness.drop / "hero.png").read_bytes()
    harness.manifest("r", "hero")
    harness.wait(lambda: "hero.png" in _processed(harness.drop), what="the first move")

    with capture_logs() as logs:
        second = make_image(harness.drop / "hero.png", color=(1, 2, 3)).read_bytes()
        assert second != first
        harness.wait(lambda: len(_processed(harness.drop)) == 2, what="the second move")
        harness.wait(
            lambda: any(e["event"].startswith("moved under a free name") for e in logs),
            what="the log line saying where it went",
        )

    processed = _processed(harness.drop)
    assert processed["hero.png"] == first  # the earlier file is untouched
    (renamed,) = [name for name in processed if name != "hero.png"]
    assert renamed.startswith("hero.") and renamed.endswith(".png")
    assert processed[renamed] == second
    assert not (harness.drop / "hero.png").exists()  # nothing processed left behind
    said = next(e for e in logs if e["event"].startswith("moved under a free name"))
    assert said["key"] == "hero.png" and said["to"].endswith("/.processed/" + renamed)
    assert not [e for e in logs if e["event"] == "cannot move source after success"]


def test_the_sidecar_follows_its_image_to_the_free_name(drop: Path) -> None:
    source = FolderSource("drop", drop)
    (drop / "shoot").mkdir()
    for round_, prompt in enumerate(("first prompt", "second prompt")):
        (drop / "shoot" / "hero.png").write_bytes(b"png %d" % round_)
        (drop / "shoot" / "hero.txt").write_text(prompt)
        assert source.move("shoot/hero.png", ".processed/shoot/hero.png")

    moved = drop / ".processed" / "shoot"
    assert (moved / "hero.png").read_bytes() == b"png 0"
    assert (moved / "hero.txt").read_text() == "first prompt"
    (renamed,) = [p for p in moved.glob("hero.*.png")]
    stem = renamed.name.removesuffix(".png")
    assert renamed.read_bytes() == b"png 1"
    assert (moved / f"{stem}.txt").read_text() == "second prompt"  # paired by name still
    assert sorted(p.name for p in (drop / "shoot").iterdir()) == []


def test_a_third_upload_in_the_same_second_gets_its_own_name(drop: Path) -> None:
    source = FolderSource("drop", drop)
    for n in range(3):
        (drop / "a.png").write_bytes(b"v%d" % n)
        assert source.move("a.png", ".processed/a.png")
    kept = sorted(p.read_bytes() for p in (drop / ".processed").iterdir())
    assert kept == [b"v0", b"v1", b"v2"]


def test_a_newer_version_at_the_name_is_not_moved_unprocessed(drop: Path) -> None:
    """The bytes a plan processed are the ones moved; a re-export saved over the file
    while it ran stays in the drop folder for its own run."""
    processed = hashlib.sha256(b"version 1").hexdigest()
    (drop / "a.png").write_bytes(b"version 2")
    with pytest.raises(InputChanged, match="no longer holds the bytes that were processed"):
        FolderSource("drop", drop).move("a.png", ".processed/a.png", sha256=processed)
    assert (drop / "a.png").read_bytes() == b"version 2"
    assert not (drop / ".processed" / "a.png").exists()
    (drop / "a.png").write_bytes(b"version 1")
    assert FolderSource("drop", drop).move("a.png", ".processed/a.png", sha256=processed)
    assert (drop / ".processed" / "a.png").read_bytes() == b"version 1"


def test_the_same_bytes_dropped_again_go_beside_the_first(harness: Harness) -> None:
    """Same path, same bytes: never run again (identity), and not left in the drop folder
    for ever either: the copy goes beside the first, and the log says it was processed."""
    harness.rule("r.yaml", MOVE_RULE)
    harness.start()
    first = make_image(harness.drop / "hero.png").read_bytes()
    harness.manifest("r", "hero")
    harness.wait(lambda: "hero.png" in _processed(harness.drop), what="the first move")

    with capture_logs() as logs:
        (harness.drop / "hero.png").write_bytes(first)  # a new file (new mtime), same bytes
        harness.wait(
            lambda: len(_processed(harness.drop)) == 2, timeout=10, what="the copy to be moved"
        )
        harness.wait(
            lambda: any(e["event"].startswith("already processed") for e in logs),
            what="the log line saying why",
        )
    assert not (harness.drop / "hero.png").exists()
    assert all(data == first for data in _processed(harness.drop).values())
    assert not [e for e in logs if e["event"] == "queued"]  # not run again
    manifests = list(harness.out.glob("r/**/manifest.json"))
    assert len(manifests) == 1 and not list(harness.out.glob("r/**/rounds"))
