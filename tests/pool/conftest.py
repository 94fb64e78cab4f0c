"""Helpers for the pool tests: a runner over real spawned workers, the stub backend, and
in-memory sources and sinks, fed through the real intake."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image

from daemon.config.profiles import Profile
from daemon.config.yamlfile import Positions
from daemon.execution.pool import WorkerPool
from daemon.execution.runner import Runner
from daemon.intake.intake import Intake
from daemon.queue.ledger import Ledger
from daemon.rules.load import LoadedRule
from daemon.rules.match import RuleSet
from daemon.rules.schema import Rule
from daemon.sinks.memory import MemorySink
from daemon.sources.memory import MemorySource

PROFILES = {
    "stub": Profile(name="stub", task="stub", model="stub", max_side=64),
    "a": Profile(name="a", task="stub", model="stub-a", max_side=64, options={"stub_memory_gb": 1}),
    "b": Profile(name="b", task="stub", model="stub-b", max_side=64, options={"stub_memory_gb": 1}),
    "solo": Profile(name="solo", task="stub", model="stub", max_side=64, options={"batch": False}),
}


def png(color=(10, 120, 200), size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def rule(
    name: str, model: str = "stub", prompt: str = "a photo", source: str = "mem", **step: Any
) -> LoadedRule:
    r = Rule.model_validate(
        {
            "name": name,
            "match": {"source": source, "include": [f"{name}/**"]},
            "prompt": prompt,
            "steps": [{"name": "one", "model": model, "variants": 1, "seed": 7, **step}],
            "output": {"sink": "out"},
        }
    )
    return LoadedRule(r, None, Positions(f"{name}.yaml"))


@dataclass
class Harness:
    ledger: Ledger
    source: MemorySource
    sink: MemorySink
    runner: Runner
    intake: Intake

    def put(self, key: str, data: bytes | None = None) -> None:
        self.source.put(key, data or png())
        while not self.intake.queue.empty():
            self.intake.handle(self.intake.queue.get())

    def drain(self, limit: int = 200) -> int:
        steps = 0
        for _ in range(limit):
            if not self.runner.step():
                break
            steps += 1
        return steps


@pytest.fixture
def harness(tmp_path):
    built: list[WorkerPool] = []
    count = iter(range(100))

    def make(
        rules: list[LoadedRule], pool: WorkerPool | None = None, **runner_kwargs: Any
    ) -> Harness:
        if pool is None:
            pool = WorkerPool("cpu", 0, tmp_path / "models", job_timeout=20)
            pool.start()
            built.append(pool)
        ledger = Ledger(tmp_path / f"ledger-{next(count)}.sqlite", max_attempts=3, retry_backoff=0)
        source, sink = MemorySource("mem"), MemorySink("out")
        runner = Runner(
            ledger, {"mem": source}, {"out": sink}, pool, PROFILES, "cpu", **runner_kwargs
        )
        ruleset = RuleSet(rules)
        intake = Intake(ledger, lambda: ruleset, {"mem": source}, runner.wake.set)
        source.start(intake.emit, intake.known_for("mem"))
        return Harness(ledger, source, sink, runner, intake)

    yield make
    for pool in built:
        pool.stop()
