"""Fixtures for source tests (helpers live in support.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.sources.folder import FolderSource
from daemon.types import Arrival

from .support import QUIET, Recorder, never_known


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    root = tmp_path / "drop"
    root.mkdir()
    return root


@pytest.fixture
def start_source(recorder: Recorder) -> Iterator[Callable[..., FolderSource]]:
    """``start_source(root, **kwargs)`` builds and starts a FolderSource (stopped at teardown)."""
    started: list[FolderSource] = []

    def _start(
        root: Path,
        *,
        cls: type[FolderSource] = FolderSource,
        emit: Callable[[Arrival], None] | None = None,
        known: Callable[[str, int, int], bool] = never_known,
        **kwargs: object,
    ) -> FolderSource:
        kwargs.setdefault("quiet_period", QUIET)
        kwargs.setdefault("rescan_interval", 60.0)
        source = cls("drop", root, **kwargs)  # type: ignore[arg-type]
        started.append(source)
        source.start(emit if emit is not None else recorder, known)
        return source

    yield _start
    for source in started:
        source.stop()
