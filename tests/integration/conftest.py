"""The daemon in-process (App), with a real folder source and the stub model: fast enough
to exercise every rule feature, close enough to production to trust."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.config.settings import load_settings
from daemon.service.app import App
from tests import waiting
from tests.reliability.conftest import LedgerView


class Harness:
    def __init__(self, root: Path, model_cache: Path):
        self.root = root
        self.drop = root / "drop"
        self.out = root / "out"
        self.rules_dir = root / "rules"
        self.model_cache = model_cache
        self.app: App | None = None
        for d in (self.drop, self.out, self.rules_dir):
            d.mkdir(parents=True, exist_ok=True)

    def rule(self, filename: str, text: str) -> Path:
        path = self.rules_dir / filename
        path.write_text(textwrap.dedent(text))
        return path

    def config(self, extra: str = "") -> Path:
        path = self.root / "darkroom.yaml"
        path.write_text(
            textwrap.dedent(f"""\
            state_dir: state
            rules_dir: rules
            model_cache: {self.model_cache}
            rules_reload_interval: 0.2
            sources:
              drop: {{path: drop, quiet_period: 0.2, rescan_interval: 2, truncated_grace: 0.5}}
            sinks:
              out: {{path: out}}
            worker: {{device: cpu, stop_timeout: 10}}
            jobs: {{max_attempts: 2, retry_backoff: 0.1}}
            """)
            + textwrap.dedent(extra)
        )
        return path

    def start(self, extra: str = "") -> App:
        self.app = App(load_settings(self.config(extra)))
        self.app.start()
        return self.app

    def stop(self) -> None:
        if self.app is not None and not self.app.stopped.is_set():
            self.app.stop()

    def manifest(self, rule: str, stem: str, timeout: float = 20, where: str | None = None) -> dict:
        # The default folder is {rule}/{dir}/{stem}.{source_ext}; rules here may set {rule}/{stem}.
        path = self.out / (where or f"{rule}/{stem}/manifest.json")

        def written() -> Path | None:
            found = [path] if path.exists() or where else []
            found += sorted(self.out.glob(f"{rule}/**/{stem}.*/manifest.json"))
            return found[0] if found and found[0].exists() else None

        at = waiting.eventually(written, timeout)
        if not isinstance(at, Path):
            raise AssertionError(f"no manifest at {path} after {timeout * waiting.PATIENCE} s")
        return json.loads(at.read_text())

    @property
    def ledger(self) -> LedgerView:
        """The ledger, read-only: whether and how the daemon decided on an input."""
        return LedgerView(self.root / "state")

    def wait(
        self, predicate: Callable[[], object], timeout: float = 20, what: str = "condition"
    ) -> object:
        return waiting.wait_for(predicate, timeout, what)


@pytest.fixture
def harness(tmp_path: Path, model_cache: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, model_cache)
    yield h
    h.stop()
