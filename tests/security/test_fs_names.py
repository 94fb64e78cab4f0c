"""Issue 15: a drop folder's file names are the uploader's. A name that is not UTF-8 (bytes
from an old camera or a Windows share) must not stop intake: it is skipped with a visible
record and the fix, and everything else goes on."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_image
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow

RULE = """\
name: r
match: {source: drop}
steps: [{name: one, model: stub, seeds: [1]}]
output: {sink: out}
"""


def test_a_name_that_is_not_utf8_is_recorded_and_the_rest_goes_on(
    daemon_factory: Any, tmp_path: Path
) -> None:
    daemon = daemon_factory(RULE)
    daemon.start()
    image = make_image(tmp_path / "good.png")
    bad = os.path.join(os.fsencode(tmp_path / "drop"), b"bad\xff\xfename.png")
    with open(bad, "wb") as out:
        out.write(image.read_bytes())
    os.replace(image, tmp_path / "drop" / "good.png")

    manifest = tmp_path / "out" / "r" / "good.png" / "manifest.json"
    wait_for(manifest.exists, 120, "the good file's outputs")

    def recorded() -> list[tuple[str, str]]:
        with sqlite3.connect(tmp_path / "state" / "ledger.sqlite") as db:
            return db.execute(
                "SELECT key, outcome FROM seen WHERE outcome LIKE '%not valid UTF-8%'"
            ).fetchall()

    [(key, outcome)] = wait_for(recorded, 60, "the bad name's record")  # type: ignore[misc]
    assert key == "bad\\xff\\xfename.png" and "rename it" in outcome
    assert os.path.exists(bad)  # left where it is
    assert not daemon.events("intake failed")
    assert daemon.stop() == 0


def test_names_reach_the_terminal_escaped(tmp_path: Path) -> None:
    """A name with an escape sequence (clear screen, retitle the terminal) or a newline is
    printed escaped in tables and results, not interpreted by the operator's terminal."""
    import subprocess
    import sys

    from tests.conftest import REPO

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULE)
    (tmp_path / "darkroom.yaml").write_text(
        "state_dir: state\nsources: {drop: {path: drop}}\nsinks: {out: {path: out}}\n"
    )
    hostile = make_image(tmp_path / "drop" / "esc\x1b[2J\x1b]0;pwned\x07\u202e.png")
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    for args in (["process", str(hostile)], ["jobs", "ls"], ["status"]):
        result = subprocess.run(
            [sys.executable, "-m", "daemon.cli", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout, args
        assert "\u202e" not in result.stdout, args
    assert (
        "\\x1b[2J" in result.stdout
        or "\\x1b[2J"
        in subprocess.run(
            [sys.executable, "-m", "daemon.cli", "jobs", "ls"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        ).stdout
    )
