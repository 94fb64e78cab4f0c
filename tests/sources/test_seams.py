"""The Source and Sink contracts: every built-in subclasses them; optional hooks are no-ops."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import InputError
from daemon.sinks import SINKS, Sink, sink_class
from daemon.sinks.folder import FolderSink
from daemon.sinks.memory import MemorySink
from daemon.sources import SOURCES, PeriodicTask, Source, source_class
from daemon.sources.files import FilesSource
from daemon.types import Arrival


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_every_registered_source_is_a_source(kind):
    assert issubclass(source_class(kind), Source)


@pytest.mark.parametrize("kind", sorted(SINKS))
def test_every_registered_sink_is_a_sink(kind):
    assert issubclass(sink_class(kind), Sink)


class _Minimal(Source):
    name = "minimal"

    def start(self, emit, known):
        pass

    def scan(self):
        pass

    def stop(self):
        pass

    def read(self, key, etag=None):
        return b""


def test_optional_source_hooks_do_nothing():
    source = _Minimal()
    arrival = Arrival("minimal", "a.jpg", "/a.jpg", 1, 1)
    assert source.settle(arrival, "done") is None
    assert source.periodic() == []
    assert source.move("a.jpg", ".processed/a.jpg") is False
    assert source.quarantine("a.jpg", {"reason": "x"}, None) is None


def test_a_source_must_implement_the_required_methods():
    class Incomplete(Source):
        def start(self, emit, known):
            pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


def test_periodic_task_is_frozen():
    task = PeriodicTask(lambda: None, 5.0, "job")
    with pytest.raises(AttributeError):
        task.interval_s = 1.0  # type: ignore[misc]


def test_sink_hooks(tmp_path: Path):
    memory = MemorySink()
    assert memory.local_root() is None and memory.cleanup_temp() == 0
    folder = FolderSink("out", tmp_path)
    assert folder.local_root() == tmp_path
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".x.png.123.tmp").write_bytes(b"")
    assert folder.cleanup_temp() == 1


def test_files_source_reads_named_files_and_their_siblings(tmp_path: Path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a = tmp_path / "one" / "lamp.jpg"
    b = tmp_path / "two" / "lamp.jpg"
    c = tmp_path / "one" / "chair.png"
    for path in (a, b, c):
        path.write_bytes(path.parent.name.encode())
    (tmp_path / "one" / "chair.txt").write_text("prompt")
    source = FilesSource([a, b, c])
    keys = sorted(source.paths)
    assert "chair.png" in keys and str(a).lstrip("/") in keys  # clashing names: full paths
    assert source.read("chair.png") == b"one"
    assert source.read("chair.txt") == b"prompt"  # a sidecar beside a named file
    arrivals = {x.key: x for x in source.arrivals()}
    assert arrivals["chair.png"].uri == str(c) and arrivals["chair.png"].size == 3
    with pytest.raises(InputError, match="not one of the files given"):
        source.read("elsewhere/x.jpg")
