"""Issue 20: under systemd, journald sees each line's level, so ``journalctl -p err`` works.

A real child process sets up logging with ``JOURNAL_STREAM`` naming its stdout (as systemd
does: ``<device>:<inode>`` of the stream), logs at every level through structlog, stdlib
logging, ``warnings`` and a worker process, and the test parses what journald would: a
``<N>`` prefix (the PRIORITY) and the rest of the line (the MESSAGE, our JSON event). The
recipes in docs/service.md are checked against that parse."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.conftest import REPO

CHILD = textwrap.dedent("""
    import logging, multiprocessing, sys, warnings

    import structlog

    from daemon.service import logs

    def emit(where):
        log = structlog.get_logger("darkroom.test")
        log.debug("a debug line", where=where)
        log.info("an info line", where=where)
        log.warning("a warning line", where=where)
        log.error("an error line", where=where)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("an exception line", where=where)
        logging.getLogger("diffusers.pipelines").warning("library warning %s", where)
        logging.getLogger("darkroom.backends").critical("critical %s", where)
        warnings.warn(f"careful {where}")

    def worker():
        logs.configure_worker()
        emit("worker")

    if __name__ == "__main__":
        logs.configure("debug", sys.argv[1])
        emit("main")
        child = multiprocessing.get_context("spawn").Process(target=worker)
        child.start()
        child.join()
        sys.exit(child.exitcode)
""")

PRIORITY_OF_LEVEL = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
LINE = re.compile(r"^<([0-7])>(.*)$")


def run_under_journal(tmp_path: Path, fmt: str, *, journal: bool = True) -> list[str]:
    """The child's stdout lines, with JOURNAL_STREAM naming that stdout (a pipe, like the
    stream journald hands a service) or, with ``journal=False``, naming another file."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    read_end, write_end = os.pipe()
    other = tmp_path / "not-the-journal"
    other.touch()
    st = os.fstat(write_end) if journal else os.stat(other)
    env = {k: v for k, v in os.environ.items() if k != "DARKROOM_LOG_SETUP"}
    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "default"
    proc = subprocess.Popen(
        [sys.executable, str(script), fmt], cwd=tmp_path, env=env, stdout=write_end
    )
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as out:
        text = out.read()
    assert proc.wait(timeout=120) == 0, text
    return text.splitlines()


def journal_entries(lines: list[str]) -> list[tuple[int, str]]:
    """What journald stores for each line: (PRIORITY, MESSAGE)."""
    entries = []
    for line in lines:
        match = LINE.match(line)
        assert match, f"a line without a priority prefix: {line!r}"
        entries.append((int(match.group(1)), match.group(2)))
    return entries


def test_every_json_line_carries_its_priority_in_main_and_worker(tmp_path: Path) -> None:
    entries = journal_entries(run_under_journal(tmp_path, "json"))
    events: list[tuple[int, dict[str, Any]]] = [(p, json.loads(m)) for p, m in entries]
    for priority, event in events:
        assert priority == PRIORITY_OF_LEVEL[event["level"]], event
    for where in ("main", "worker"):
        seen = {
            (e["event"], p)
            for p, e in events
            if where in (e.get("where"), e.get("event", "").rpartition(" ")[2])
        }
        assert ("a debug line", 7) in seen
        assert ("an info line", 6) in seen
        assert ("a warning line", 4) in seen
        assert ("an error line", 3) in seen
        assert ("an exception line", 3) in seen
        assert (f"library warning {where}", 4) in seen
        assert (f"critical {where}", 2) in seen
        assert (f"careful {where}", 4) in seen

    # docs/service.md's recipes, applied to what journald stored:
    docs = (REPO / "docs" / "service.md").read_text()
    # `journalctl -u darkroom -b -p err` shows priorities 0..3: errors, exceptions, critical.
    assert "journalctl -u darkroom -b -p err" in docs
    shown = [e["event"] for p, e in events if p <= 3]
    assert shown and all(e.startswith(("an error", "an exception", "critical")) for e in shown)
    # `-p warning` adds the warnings, from our code and from libraries alike.
    assert "journalctl -u darkroom -p warning" in docs
    assert {e["logger"] for p, e in events if p == 4} >= {
        "darkroom.test",
        "diffusers.pipelines",
        "py.warnings",
    }
    # `-o json | jq -r .MESSAGE | jq 'select(.level=="error")'`: MESSAGE is the JSON event.
    assert """jq -r .MESSAGE \\| jq 'select(.level=="error")'""" in docs  # `\|` in a table
    assert [m for _, m in entries if json.loads(m)["level"] == "error"]


def test_a_console_traceback_is_prefixed_on_every_line(tmp_path: Path) -> None:
    entries = journal_entries(run_under_journal(tmp_path, "console"))
    # journald makes one entry per line: each line of the traceback is an error too.
    boom = [i for i, (_, message) in enumerate(entries) if "RuntimeError: boom" in message]
    assert boom and all(entries[i][0] == 3 for i in boom)
    assert any(p == 3 and "Traceback" in m for p, m in entries)


def test_no_prefix_when_the_journal_stream_is_not_ours(tmp_path: Path) -> None:
    """StandardOutput=file:... (or a command run by hand from a unit's shell) inherits
    JOURNAL_STREAM but does not write to the journal: no `<N>` there."""
    lines = run_under_journal(tmp_path, "json", journal=False)
    assert lines and all(line.startswith("{") for line in lines)


def test_the_unit_names_the_syslog_identifier() -> None:
    unit = (REPO / "systemd" / "darkroom.service").read_text()
    assert re.search(r"^SyslogIdentifier=darkroom$", unit, re.MULTILINE)
    assert "journalctl -t darkroom" in (REPO / "docs" / "service.md").read_text()
