"""Fixtures for the operator-facing tests: a webhook receiver on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.conftest import Receiver, serve_receiver


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    # httpx honours *_PROXY variables; a proxy must never carry these loopback requests.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    with serve_receiver(timeout=30.0) as state:
        yield state
