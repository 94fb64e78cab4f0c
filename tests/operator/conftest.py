"""Fixtures for the operator-facing tests: a webhook receiver on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from daemon.types import Plan
from tests.service.conftest import Receiver, serve_receiver


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    # httpx honours *_PROXY variables; a proxy must never carry these loopback requests.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    with serve_receiver(timeout=30.0) as state:
        yield state


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
