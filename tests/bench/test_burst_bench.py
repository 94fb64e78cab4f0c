"""bench/burst_bench.py at a tiny count: the benchmark runs end to end against the real daemon
and its exactly-once check holds. No wall-clock assertion: the speed is the benchmark's to
report, not this test's to judge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # one daemon start and a 200-file burst: ~15 s on 2 cores

FILES = 200


def test_burst_bench_plans_every_file_exactly_once(tmp_path: Path, model_cache: Path) -> None:
    out = tmp_path / "burst.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "burst_bench.py"),
         "--files", str(FILES), "--runs", "1", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DARKROOM_TEST_MODEL_CACHE": str(model_cache)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "planned s" in proc.stdout  # the table was printed
    report = json.loads(out.read_text())
    assert report["params"]["files"] == FILES
    assert report["params"]["formats"] == ["png", "jpeg"]
    assert report["params"]["bytes_max"] < 2048  # "a few hundred bytes"
    [run] = report["runs"]
    assert run["checks"] == {
        "plans": FILES,
        "distinct_keys": FILES,
        "seen": FILES,
        "queued_lines": FILES,
        "queued_distinct_keys": FILES,
    }
    assert run["exactly_once"] is True and report["summary"]["exactly_once"] is True
    assert run["exit_code"] == 0, "the daemon did not stop cleanly on SIGTERM"
    assert run["rss_mib"] >= run["rss_idle_mib"] > 0 and run["children_rss_mib"] >= 0
    # The process tree's CPU (a burst's second intake process included) and the main's.
    assert run["cpu_ms_per_file"] >= run["main_cpu_ms_per_file"] > 0
    assert run["planned_s"] >= 0 and run["write_s"] >= 0
    machine = report["machine"]
    assert machine["nproc"] >= 1 and machine["python"] and "git_head" in machine
