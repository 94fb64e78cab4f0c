"""Run the real daemon as a subprocess and read its JSON log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import waiting

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    return waiting.wait_for(predicate, timeout, what, interval=0.1)


class Daemon:
    """One ``darkroom run`` process; its log goes to a file so it survives restarts."""

    def __init__(self, workdir: Path, config: Path, log: Path):
        self.workdir, self.config, self.log = workdir, config, log
        self.proc: subprocess.Popen | None = None
        self._log_start = 0

    def start(self, ready_timeout: float = 120) -> None:
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(self.config)],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for(
            lambda: self.events("darkroom running") or self.proc.poll() is not None,
            ready_timeout,
            "the daemon to start",
        )
        assert self.proc.poll() is None, f"daemon exited early:\n{self.text()}"

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self, since_start: bool = True) -> list[dict]:
        data = self.log.read_bytes()[self._log_start if since_start else 0 :]
        out = []
        for raw in data.decode(errors="replace").splitlines():
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

    def events(self, name: str, since_start: bool = True, **fields: object) -> list[dict]:
        return [
            e
            for e in self.lines(since_start)
            if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
        ]

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"daemon did not stop within {timeout} s after SIGTERM")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemon_factory(tmp_path: Path, model_cache: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(rule: str, *, quiet_period: float = 0.5, extra: str = "") -> Daemon:
        (tmp_path / "drop").mkdir(exist_ok=True)
        (tmp_path / "rules").mkdir(exist_ok=True)
        (tmp_path / "rules" / "rule.yaml").write_text(textwrap.dedent(rule))
        config = tmp_path / "darkroom.yaml"
        config.write_text(
            textwrap.dedent(f"""\
            state_dir: state
            rules_dir: rules
            model_cache: {model_cache}
            sources:
              drop: {{type: folder, path: drop, quiet_period: {quiet_period}, rescan_interval: 5, truncated_grace: 1}}
            sinks:
              out: {{type: folder, path: out}}
            worker: {{device: cpu, threads: 2, stop_timeout: 20}}
            jobs: {{max_attempts: 3, retry_backoff: 0.5}}
            log: {{format: json}}
            """)
            + textwrap.dedent(extra)
        )
        daemon = Daemon(tmp_path, config, tmp_path / "daemon.log")
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.kill()
