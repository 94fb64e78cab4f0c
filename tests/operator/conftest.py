"""Fixtures for the operator-facing tests: a webhook receiver on loopback, the real CLI in a
folder of its own, and a plan to seed a ledger with."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.types import Plan
from tests.conftest import REPO
from tests.service.conftest import Receiver, serve_receiver


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    # httpx honours *_PROXY variables; a proxy must never carry these loopback requests.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    with serve_receiver(timeout=30.0) as state:
        yield state


def darkroom(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it in ``cwd``, offline, with only the environment given (plus
    ``env``): nothing of the test runner's own settings leaks in."""
    base = {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(cwd / "hf"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=300,
    )


CLI_CONFIG = """\
state_dir: state
sources: {drop: {path: drop}}
sinks: {out: {path: out}}
worker: {device: cpu, threads: 2}
"""


@pytest.fixture
def cli_workdir(tmp_path: Path) -> Callable[..., Path]:
    """``make(name, rule, config_extra="")``: ``tmp_path`` set up to run the CLI in, with
    ``rules/NAME.yaml`` holding ``rule`` and a darkroom.yaml (:data:`CLI_CONFIG` plus
    ``config_extra``) watching an empty ``drop/`` into ``out/``."""

    def make(name: str, rule: str, config_extra: str = "") -> Path:
        (tmp_path / "rules").mkdir(exist_ok=True)
        (tmp_path / "rules" / f"{name}.yaml").write_text(rule)
        (tmp_path / "darkroom.yaml").write_text(CLI_CONFIG + config_extra)
        (tmp_path / "drop").mkdir(exist_ok=True)
        return tmp_path

    return make


def plan(key: str) -> Plan:
    """A one-unit plan of rule "r" for ``key``, to seed a ledger directly."""
    sha = uuid.uuid4().hex * 2
    return Plan.model_validate(
        {
            "sha256": sha,
            "content": sha,
            "rule": "r",
            "digest": "d1",
            "arrival": {"source": "drop", "key": key, "uri": f"/nowhere/{key}", "size": 1},
            "prompt": "p",
            "sink": "out",
            "path": "{rule}/{stem}/{step}-{variant}.{ext}",
            "manifest": f"r/{key}/manifest.json",
            "sheet": f"r/{key}/sheet.png",
            "units": [
                {
                    "id": "one",
                    "name": "one",
                    "model": "stub",
                    "input": "source",
                    "prompt": "p",
                    "seeds": [1],
                }
            ],
        }
    )
