"""Fixtures for the hosted backends: fake provider servers on 127.0.0.1 and fast retry settings.

No test here reaches the internet: every base_url points at a fake in ``fakes.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from backends import ModelSpec, backend_class
from backends.profiles import PROFILES
from tests.hosted.fakes import FakeArk, FakeBFL, FakeGemini

# Retries fast enough for tests; a test that wants other values passes them.
FAST = {"timeout": 5.0, "retries": 2, "backoff": 0.01, "max_backoff": 0.05, "max_wait": 5.0}


@pytest.fixture
def gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    monkeypatch.setenv("GEMINI_API_KEY", FakeGemini.key)
    with FakeGemini() as fake:
        yield fake


@pytest.fixture
def ark(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeArk]:
    monkeypatch.setenv("ARK_API_KEY", FakeArk.key)
    with FakeArk() as fake:
        yield fake


@pytest.fixture
def bfl(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBFL]:
    monkeypatch.setenv("BFL_API_KEY", FakeBFL.key)
    with FakeBFL() as fake:
        yield fake


def make(task: str, model: str, base_url: str, tmp: Path | str = "/tmp", **options: Any) -> Any:
    """A loaded backend for ``task`` talking to ``base_url``, with FAST retries and test prices."""
    opts = {**FAST, "base_url": base_url, "price_per_image": 0.05, **options}
    spec = ModelSpec(task=task, model=model, options=ModelSpec.freeze_options(opts))
    backend = backend_class(task)(spec, Path(tmp))
    backend.load()
    return backend


def profile(name: str, base_url: str, tmp: Path | str = "/tmp", **options: Any) -> Any:
    """A loaded backend for built-in profile ``name`` (its model and limits) at ``base_url``."""
    fields = PROFILES[name]
    opts = {**fields["options"], **FAST, "base_url": base_url, **options}
    if fields.get("price_per_image") is not None:
        opts.setdefault("price_per_image", fields["price_per_image"])
    spec = ModelSpec(
        task=fields["task"], model=fields["model"], options=ModelSpec.freeze_options(opts)
    )
    backend = backend_class(fields["task"])(spec, Path(tmp))
    backend.load()
    return backend


def image(
    colour: tuple[int, int, int] = (200, 80, 40), size: tuple[int, int] = (64, 48)
) -> Image.Image:
    return Image.new("RGB", size, colour)
