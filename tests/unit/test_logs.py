"""One logging system: with ``format: json`` every line a process writes is a JSON object.

The check runs in a fresh interpreter (logging and warnings are process-global) that does
what the daemon's processes do: the main process calls ``logs.configure``, a spawned worker
calls ``logs.configure_worker``; both then log the way our code, the backends and the
libraries do.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.typing import EventDict, Processor

from daemon.execution import worker
from daemon.service import logs

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""\
    import logging, multiprocessing, sys, threading, warnings
    import structlog
    from daemon.service import logs

    def library_defaults(name, propagate):
        # What diffusers / transformers (propagate False) and huggingface_hub (True) do to
        # their root logger when first imported.
        root = logging.getLogger(name)
        root.addHandler(logging.StreamHandler())
        root.setLevel(logging.INFO)
        root.propagate = propagate

    def emit(where):
        library_defaults("diffusers", False)
        library_defaults("huggingface_hub", True)
        structlog.get_logger("darkroom.test").info("structlog info", where=where)
        structlog.get_logger("darkroom.test").warning("structlog warning", where=where)
        structlog.get_logger("darkroom.test").debug("structlog debug", where=where)
        logging.getLogger("darkroom.backends").info("backend info %s", where)
        logging.getLogger("diffusers.pipelines.x").info("diffusers info %s", where)
        logging.getLogger("diffusers.pipelines.x").warning("diffusers warning %s", where)
        logging.getLogger("transformers.modeling").warning("transformers warning %s", where)
        logging.getLogger("huggingface_hub.file_download").warning("hub warning %s", where)
        logging.getLogger("PIL.TiffImagePlugin").warning("libtiff warning %s", where)
        logging.getLogger("apscheduler.executors").info("Running job %s", where)
        warnings.warn(f"careful {where}", FutureWarning)
        try:
            1 / 0
        except ZeroDivisionError:
            logging.getLogger("darkroom.backends").exception("backend failed %s", where)
        thread = threading.Thread(target=lambda: 1 / 0, name=f"doomed-{where}")
        thread.start()
        thread.join()
        print(f"done {where}", file=sys.stderr)  # the one bare line the test expects

    def worker_entry():
        logs.configure_worker()
        emit("worker")

    if __name__ == "__main__":
        # transformers imported before logging is configured: its handler is already there
        library_defaults("transformers", False)
        logs.configure("info", "json")
        emit("main")
        child = multiprocessing.get_context("spawn").Process(target=worker_entry)
        child.start()
        child.join()
        sys.exit(child.exitcode)
    """)


def _run(tmp_path: Path) -> list[str]:
    script = tmp_path / "emit.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != logs.WORKER_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "default"
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout
    return proc.stdout.splitlines()


def test_json_output_is_json_lines_only_in_main_and_worker(tmp_path: Path) -> None:
    lines = _run(tmp_path)
    bare = [line for line in lines if not line.startswith("{")]
    assert sorted(bare) == ["done main", "done worker"], lines
    events: list[dict[str, Any]] = [json.loads(line) for line in lines if line.startswith("{")]
    for event in events:
        assert event["level"] in {"debug", "info", "warning", "error"}, event
        assert event["logger"], event
        assert event["timestamp"], event

    for where in ("main", "worker"):
        mine = [
            e
            for e in events
            if where in e["event"] or where in (e.get("where"), e.get("thread", "")[7:])
        ]
        names = {(e["logger"], e["level"], e["event"]) for e in mine}
        assert ("darkroom.test", "info", "structlog info") in names
        assert ("darkroom.test", "warning", "structlog warning") in names
        assert ("darkroom.backends", "info", f"backend info {where}") in names
        assert ("diffusers.pipelines.x", "info", f"diffusers info {where}") in names
        assert ("transformers.modeling", "warning", f"transformers warning {where}") in names
        assert ("PIL.TiffImagePlugin", "warning", f"libtiff warning {where}") in names
        assert ("py.warnings", "warning", f"careful {where}") in names
        # once each, not again as bare text or a second copy
        assert sum(e["event"] == f"diffusers warning {where}" for e in mine) == 1
        assert sum(e["event"] == f"hub warning {where}" for e in mine) == 1
        # below their floor whatever log.level says: APScheduler logs every job run at INFO
        assert not any(e["logger"].startswith("apscheduler") for e in mine)
        assert not any(e["event"] == "structlog debug" for e in mine)
        failed = next(e for e in mine if e["event"] == f"backend failed {where}")
        assert failed["level"] == "error" and "ZeroDivisionError" in failed["exception"]
        crashed = next(e for e in mine if e.get("thread") == f"doomed-{where}")
        assert (
            crashed["logger"] == "darkroom.threads" and "ZeroDivisionError" in crashed["exception"]
        )
        warning = next(e for e in mine if e["event"] == f"careful {where}")
        assert warning["category"] == "FutureWarning"


def test_the_worker_entry_applies_the_daemons_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(logs, "configure_worker", lambda: calls.append("configured"))

    class ClosedPipe:
        sent: list[Any] = []

        def send(self, message: Any) -> None:
            self.sent.append(message)

        def recv(self) -> Any:
            raise EOFError

    worker.main(ClosedPipe(), "cpu", 0, "unused")
    assert calls == ["configured"]
    assert ClosedPipe.sent[0][0] == "ready"


def test_worker_without_a_configured_parent_leaves_logging_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(logs.WORKER_ENV, raising=False)
    installed: list[tuple[Any, ...]] = []
    monkeypatch.setattr(logs, "_install", lambda *args: installed.append(args))
    logs.configure_worker()
    monkeypatch.setenv(logs.WORKER_ENV, "warning:console:1")
    logs.configure_worker()
    assert installed == [("warning", "console", True, sys.stdout)]


def _records() -> list[logging.LogRecord]:
    """What reaches the handler: structlog events (their dict in ``msg``), a library's record
    with arguments, and both with an exception."""
    structlog_logger = logging.getLogger("darkroom.test")
    event = {"key": "a/b.png", "plans": 2, "event": "queued", "level": "info"}
    event |= {"logger": "darkroom.test", "timestamp": "2026-11-28T00:00:00Z"}
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        exc_info = sys.exc_info()
    records = [
        logging.LogRecord("darkroom.test", logging.INFO, "", 0, event, None, None),
        logging.LogRecord(
            "darkroom.test", logging.ERROR, "", 0, event | {"level": "error"}, None, exc_info
        ),
        logging.LogRecord(
            "diffusers.x", logging.WARNING, "", 0, "loaded %s in %d s", ("unet", 3), None
        ),
        logging.LogRecord("darkroom.backends", logging.ERROR, "", 0, "failed %s", ("x",), exc_info),
    ]
    for record in records[:2]:  # as structlog's wrap_for_formatter leaves them
        record._logger, record._name = structlog_logger, record.levelname.lower()
    return records


@pytest.mark.parametrize("renderer", ["json", "console"])
def test_lines_are_rendered_as_structlogs_processor_formatter_renders_them(renderer: str) -> None:
    """EventFormatter skips ProcessorFormatter's copy of each record: same lines, record kept."""

    def stamp(_logger: Any, _name: str, event: EventDict) -> EventDict:
        event["timestamp"] = "2026-11-28T00:00:00Z"  # one time for both
        return event

    pre_chain: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        stamp,
    ]
    rendering: list[Any] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if renderer == "json"
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    ours = logs.EventFormatter(pre_chain, rendering)
    theirs = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    for record in _records():
        before = dict(record.__dict__)
        assert ours.format(record) == theirs.format(record)
        assert record.__dict__ == before  # other handlers (caplog) see it as logged
