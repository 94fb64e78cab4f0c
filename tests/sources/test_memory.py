"""MemorySource: the in-memory stub that tests of the rest of the daemon use."""

from __future__ import annotations

import pytest

from daemon.errors import InputError
from daemon.sources import SOURCES, source_class
from daemon.sources.memory import MemorySource

from .support import Recorder, never_known


def test_registered():
    assert source_class("memory") is MemorySource
    assert set(SOURCES) >= {"folder", "memory"}


def test_put_emits_at_once_and_read_returns_bytes():
    rec = Recorder()
    source = MemorySource("mem")
    source.start(rec, never_known)
    arrival = source.put("shoots/a.jpg", b"abc")
    assert rec.snapshot() == [arrival]
    assert arrival.uri == "memory://mem/shoots/a.jpg"
    assert (arrival.source, arrival.key, arrival.size) == ("mem", "shoots/a.jpg", 3)
    assert arrival.mtime_ns > 0
    assert source.read("shoots/a.jpg") == b"abc"


def test_items_put_before_start_are_emitted_by_the_startup_scan():
    rec = Recorder()
    source = MemorySource("mem")
    source.put("a.jpg", b"1")
    assert rec.snapshot() == []
    source.start(rec, never_known)
    assert rec.emitted_keys() == ["a.jpg"]


def test_scan_reemits_only_unhandled_items():
    rec = Recorder()
    source = MemorySource("mem")
    handled: set[str] = set()
    source.start(rec, lambda key, size, mtime_ns: key in handled)
    source.put("a.jpg", b"1")
    source.put("b.jpg", b"2")
    handled.add("a.jpg")
    source.scan()
    assert rec.emitted_keys() == ["a.jpg", "b.jpg", "b.jpg"]


def test_read_missing_raises_input_error():
    source = MemorySource("mem")
    source.put("a.jpg", b"1")
    source.remove("a.jpg")
    with pytest.raises(InputError, match="memory://mem/a.jpg: file vanished"):
        source.read("a.jpg")


def test_emit_raising_is_not_raised_back():
    source = MemorySource("mem")

    def emit(arrival):
        raise RuntimeError("boom")

    source.start(emit, never_known)
    source.put("a.jpg", b"1")  # logged, not raised
    assert source.read("a.jpg") == b"1"


def test_stop_ends_emitting():
    rec = Recorder()
    source = MemorySource("mem")
    source.start(rec, never_known)
    source.stop()
    source.stop()
    source.put("a.jpg", b"1")
    assert rec.snapshot() == []


@pytest.mark.parametrize("key", ["", "/abs.jpg", "../x.jpg", "a//b.jpg", "a/./b.jpg"])
def test_bad_keys_are_refused(key):
    with pytest.raises(ValueError, match="invalid key"):
        MemorySource("mem").put(key, b"")
