"""Shared pieces of the reliability suite: the real daemon as a subprocess (kill -9, SIGTERM,
restart, lock), an in-process App harness with configurable sources (fault injection at a
seam), a read-only view of the ledger, and checks of an output set."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import waiting
from tests.e2e.conftest import Daemon as _E2EDaemon
from tests.e2e.conftest import wait_for

__all__ = ["Daemon", "Harness", "LedgerView", "wait_for", "RULE", "pid_alive", "check_output_set"]

REPO = Path(__file__).resolve().parents[2]

# One step, two fixed seeds: a complete output set is one-0.png, one-1.png, the sheet,
# the manifest and the review page.
RULE = """\
name: r
match: {source: drop}
prompt: "{stem}"
steps:
  - {name: one, model: stub, variants: 2, seeds: [1, 2]}
output: {sink: out}
"""


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except OSError:
        return False
    return False


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


class LedgerView:
    """The ledger opened read-only (``mode=ro``), as an operator's tool would read it."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / "ledger.sqlite"

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        if not self.path.exists():
            return []
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:  # tables not created yet
            if "no such table" in str(exc):
                return []
            raise
        finally:
            db.close()

    def count(self, sql: str, *args: Any) -> int:
        rows = self.rows(sql, *args)
        return rows[0][0] if rows else 0

    def plans(self, key: str | None = None) -> list[sqlite3.Row]:
        if key is None:
            return self.rows("SELECT * FROM plans")
        return self.rows("SELECT * FROM plans WHERE key=?", key)

    def jobs(self, key: str | None = None) -> list[sqlite3.Row]:
        if key is None:
            return self.rows("SELECT * FROM jobs")
        return self.rows("SELECT j.* FROM jobs j JOIN plans p ON p.id=j.plan_id WHERE p.key=?", key)

    def seen(self, key: str) -> sqlite3.Row | None:
        rows = self.rows("SELECT * FROM seen WHERE key=?", key)
        return rows[0] if rows else None

    def quarantine(self) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM quarantine")

    def outcome(self, key: str) -> str | None:
        """How the ledger says this input ended: done / partial / failed (quarantined) /
        quarantined (unreadable) / ignored / active, or None when the ledger has no trace."""
        plans = self.plans(key)
        if plans:
            states = {p["state"] for p in plans}
            return "active" if "active" in states else sorted(states)[0]
        seen = self.seen(key)
        if seen is not None and seen["outcome"].startswith("unreadable"):
            return "quarantined"  # there, but it could not be read: recorded with its reason
        return "ignored" if seen is not None and seen["outcome"].startswith("ignored") else None


def tree(root: Path) -> list[str]:
    """Every file under ``root`` (dot-files included), relative, sorted."""
    if not root.exists():
        return []
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )


def temp_files(root: Path) -> list[str]:
    return [p for p in tree(root) if Path(p).name.startswith(".") and p.endswith(".tmp")]


def check_output_set(out: Path, state_dir: Path, folder: str, key: str, outputs: int = 2) -> dict:
    """``folder`` holds exactly one complete, committed output set for ``key``: every
    output the manifest lists exists with the recorded sha256, the ledger says done only
    for what exists, there are no temp files and no leftover rounds."""
    import hashlib

    base = out / folder
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["status"] == "done", manifest
    assert manifest["rounds"] == [], f"a rerun archived an earlier output set: {manifest['rounds']}"
    listed = [o for s in manifest["steps"] for o in s["outputs"]]
    assert len(listed) == outputs, listed
    for o in listed:
        data = (out / o["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == o["sha256"], (
            f"{o['path']} is not what the ledger recorded"
        )
    files = [p for p in tree(base)]
    images = [p for p in files if p.startswith("one-")]
    assert sorted(images) == sorted(Path(o["path"]).name for o in listed), files
    assert not [p for p in files if p.startswith("rounds/")], files
    assert not temp_files(out), temp_files(out)
    ledger = LedgerView(state_dir)
    plans = ledger.plans(key)
    assert len(plans) == 1, [dict(p) for p in plans]
    assert plans[0]["state"] == "done"
    assert plans[0]["id"] == manifest["plan_id"]
    for job in ledger.jobs(key):
        assert job["state"] == "done", dict(job)
        for o in json.loads(job["outputs"]):
            assert (out / o["path"]).is_file(), f"the ledger says done but {o['path']} is missing"
    return manifest


# -- the daemon as a subprocess -------------------------------------------------------------


class Daemon(_E2EDaemon):
    """``darkroom run`` with extra environment (DARKROOM_FAULT) and process introspection."""

    env: dict[str, str]

    def start(
        self, ready_timeout: float = 60, env: dict[str, str] | None = None, wait_ready: bool = True
    ) -> None:
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        full = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        if not (env or {}).get("DARKROOM_FAULT"):
            full.pop("DARKROOM_FAULT", None)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(self.config)],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full,
            )
        if wait_ready:
            wait_for(
                lambda: self.events("darkroom running") or self.proc.poll() is not None,
                ready_timeout,
                "the daemon to start",
            )
            assert self.proc.poll() is None, f"daemon exited early:\n{self.text()}"
        self.workers.extend(self.worker_pids())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return [e["pid"] for e in self.events("worker started") if "pid" in e]

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon still running after {timeout} s:\n{self.text()[-3000:]}"
            ) from None

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", *args, "--config", str(self.config)],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )


@pytest.fixture
def darkroom(tmp_path: Path, model_cache: Path) -> Iterator[Callable[..., Daemon]]:
    """Write a config + rule and return a (not yet started) Daemon. Everything it started,
    orphaned workers included, is killed at the end."""
    made: list[Daemon] = []

    def make(
        rule: str = RULE,
        *,
        quiet_period: float = 0.3,
        rescan_interval: float = 5,
        stop_timeout: float = 20,
        max_attempts: int = 3,
        retry_backoff: float = 0.2,
        source_extra: str = "",
        extra: str = "",
    ) -> Daemon:
        for d in ("drop", "rules", "out"):
            (tmp_path / d).mkdir(exist_ok=True)
        (tmp_path / "rules" / "rule.yaml").write_text(textwrap.dedent(rule))
        config = tmp_path / "darkroom.yaml"
        config.write_text(
            textwrap.dedent(f"""\
            state_dir: state
            rules_dir: rules
            model_cache: {model_cache}
            rules_reload_interval: 0.3
            sources:
              drop: {{type: folder, path: drop, quiet_period: {quiet_period}, rescan_interval: {rescan_interval}{source_extra}}}
            sinks:
              out: {{type: folder, path: out}}
            worker: {{device: cpu, threads: 1, stop_timeout: {stop_timeout}}}
            jobs: {{max_attempts: {max_attempts}, retry_backoff: {retry_backoff}, hold_backoff: 0.2, hold_backoff_max: 1}}
            digest: {{enabled: false}}
            log: {{format: json}}
            """)
            + textwrap.dedent(extra)
        )
        daemon = Daemon(tmp_path, config, tmp_path / "daemon.log")
        daemon.workers = []
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.kill()
        for pid in set(daemon.workers + daemon.worker_pids()):
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# -- the daemon in-process ------------------------------------------------------------------


class Harness:
    """An App in this process: a real folder source and sink, the stub model, and seams
    (sources, os functions) that a subprocess cannot offer."""

    def __init__(self, root: Path, model_cache: Path):
        self.root = root
        self.drop = root / "drop"
        self.out = root / "out"
        self.rules_dir = root / "rules"
        self.state = root / "state"
        self.quarantine_dir = root / "quarantine"
        self.model_cache = model_cache
        self.app: Any = None
        for d in (self.drop, self.out, self.rules_dir):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def ledger(self) -> LedgerView:
        return LedgerView(self.state)

    def rule(self, text: str = RULE, filename: str = "rule.yaml") -> Path:
        path = self.rules_dir / filename
        path.write_text(textwrap.dedent(text))
        return path

    def start(
        self,
        *,
        quiet_period: float = 0.2,
        rescan_interval: float = 2,
        max_attempts: int = 3,
        retry_backoff: float = 0.1,
        extra: str = "",
        source_extra: str = "",
        sources: dict[str, Any] | None = None,
        source_factory: Callable[[Any], dict[str, Any]] | None = None,
    ) -> Any:
        from daemon.config.settings import load_settings
        from daemon.service.app import App

        config = self.root / "darkroom.yaml"
        config.write_text(
            textwrap.dedent(f"""\
            state_dir: state
            rules_dir: rules
            model_cache: {self.model_cache}
            rules_reload_interval: 0.2
            sources:
              drop: {{path: drop, quiet_period: {quiet_period}, rescan_interval: {rescan_interval}, quarantine: quarantine{source_extra}}}
            sinks:
              out: {{path: out}}
            worker: {{device: cpu, threads: 1, stop_timeout: 10}}
            jobs: {{max_attempts: {max_attempts}, retry_backoff: {retry_backoff}, hold_backoff: 0.2, hold_backoff_max: 1}}
            digest: {{enabled: false}}
            """)
            + textwrap.dedent(extra)
        )
        self.config = config
        settings = load_settings(config)
        if source_factory is not None:
            sources = source_factory(settings)
        self.app = App(settings, sources=sources)
        self.app.start()
        return self.app

    def stop(self) -> None:
        if self.app is not None and not self.app.stopped.is_set():
            self.app.stop()

    def wait(
        self, predicate: Callable[[], object], timeout: float = 20, what: str = "condition"
    ) -> object:
        return waiting.wait_for(predicate, timeout, what)

    def outcome(self, key: str) -> str | None:
        return self.ledger.outcome(key)

    def settled(self, key: str) -> str | None:
        """The final outcome of ``key`` (done, partial, failed, ignored), None while open."""
        outcome = self.outcome(key)
        return None if outcome in (None, "active") else outcome


@pytest.fixture
def harness(tmp_path: Path, model_cache: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, model_cache)
    yield h
    h.stop()
