"""The real daemon's outputs follow its umask: under ``UMask=0027`` (docs/service.md) every
output, sheet, page and manifest is 0640 and every folder it makes 0750 - not 0644 always."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.conftest import make_image
from tests.reliability.conftest import LedgerView, darkroom, wait_for  # noqa: F401


def test_outputs_follow_the_daemons_umask(darkroom, tmp_path: Path):  # noqa: F811
    daemon = darkroom()
    old = os.umask(0o027)  # inherited by the daemon started now
    try:
        daemon.start()
    finally:
        os.umask(old)
    ledger = LedgerView(tmp_path / "state")
    try:
        make_image(tmp_path / "drop" / "a.png")
        wait_for(lambda: ledger.outcome("a.png") == "done", 120, "a.png to be done")
        # The page and the root index are written before the plan's "source finished".
        wait_for(lambda: daemon.events("source finished", key="a.png"), 60, "a.png finished")
    finally:
        daemon.stop()
    out = tmp_path / "out"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files), files
    assert any(p.suffix == ".png" for p in files), files
    wrong = {
        str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in files
        if p.name != ".darkroom.lock" and stat.S_IMODE(p.stat().st_mode) != 0o640
    }
    assert wrong == {}, f"outputs not 0640 under umask 0027: {wrong}"
    folders = [p for p in out.rglob("*") if p.is_dir()]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o750 for p in folders), [
        (str(p), oct(p.stat().st_mode)) for p in folders
    ]
