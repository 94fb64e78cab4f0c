"""``darkroom status --json`` is one document with every list's total; a cut list says so.

The ledger is seeded through its own API (three quarantined inputs, three failed jobs); no
daemon runs, so the sources and sinks are reported as never checked here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from daemon.queue.ledger import Ledger
from tests.e2e.conftest import REPO
from tests.operator.conftest import plan


def setup(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "drop").mkdir()
    (tmp_path / "state").mkdir()
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite", max_attempts=1)
    for i in range(3):
        ledger.record_quarantine("drop", f"bad-{i}.png", f"{i}" * 64, "not an image", None)
        ledger.submit(plan(f"f-{i}.png"))
        job = ledger.claim("seed")
        assert job is not None
        ledger.fail(job.id, f"broken {i}", retryable=False)
    ledger.close()
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        textwrap.dedent("""\
        state_dir: state
        rules_dir: rules
        sources: {drop: {type: folder, path: drop}}
        sinks: {out: {type: folder, path: out}}
        """)
    )
    return config


def status(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "status", "--config", str(config), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_status_json_is_one_document_with_totals(tmp_path: Path) -> None:
    config = setup(tmp_path)
    result = status(config, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert document["jobs"]["failed"] == 3
    assert document["failed"]["total"] == 3 and len(document["failed"]["items"]) == 3
    failed = document["failed"]["items"][0]
    assert len(failed["id"]) > 12 and failed["state"] == "failed"
    assert failed["error"].startswith("broken") and failed["updated_at"].endswith("Z")
    assert document["quarantined"]["total"] == 3
    assert {q["key"] for q in document["quarantined"]["items"]} == {
        f"bad-{i}.png" for i in range(3)
    }
    assert document["rules"] == {"r": {"failed": 3}}
    assert document["daemon"]["running"] is None and document["parts"] == []
    assert "showing" not in result.stderr


def test_a_cut_list_says_how_many_more_in_text_and_json(tmp_path: Path) -> None:
    config = setup(tmp_path)
    cut = status(config, "--json", "--limit", "2")
    document = json.loads(cut.stdout)
    assert len(document["failed"]["items"]) == 2 and document["failed"]["total"] == 3
    assert "showing 2 of 3 failed (use --limit)" in cut.stderr
    assert "showing 2 of 3 quarantined (use --limit)" in cut.stderr

    text = status(config, "--limit", "2")
    assert text.returncode == 0, text.stderr
    assert "quarantined (showing 2 of 3; --limit 3 shows all)" in text.stdout
    assert "failed (showing 2 of 3; --limit 3 shows all)" in text.stdout
    assert "sources and sinks: no report yet" in text.stdout
