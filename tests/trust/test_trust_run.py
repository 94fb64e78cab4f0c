"""Issue 14, "Done when": the scripted trust run (bench/trust_run.py) at small counts. Same
stems across folders and extensions, slow uploads pausing longer than the quiet period,
re-exports while queued and a hosted rule whose API key is missing until a fix + SIGHUP:
nothing overwritten, nothing quarantined, every input recorded, held jobs resumed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_small_trust_run_reports_zeros(tmp_path: Path) -> None:
    out = tmp_path / "trust_run.json"
    run = subprocess.run(
        [
            sys.executable, str(REPO / "bench" / "trust_run.py"),
            "--files", "9", "--stems", "2", "--slow", "2", "--reexports", "2", "--hosted", "1",
            "--timeout", "120", "--workdir", str(tmp_path / "run"), "--json", str(out),
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.exists(), run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["outputs_overwritten"] == 0, report
    assert report["inputs_quarantined_wrongly"] == 0, report
    assert report["inputs_without_visible_record"] == 0, report
    assert report["held_before_fix"] == 1, report
    assert report["held_resume_s"] is not None, f"held jobs never resumed after the fix: {report}"
    assert report["stuck"] is None, report
    assert run.returncode == 0, run.stdout + run.stderr
