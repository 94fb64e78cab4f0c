"""Our inotify observer (daemon.sources.folder.inotify), on its own: the events it hands on
for the folder changes users make, and what it does when the kernel loses events or runs out
of watches. The folder source's own tests (test_folder.py) run on it too, on Linux.

A "not reported" check writes a marker file afterwards and waits for it: the kernel queues a
tree's events in order, so once the marker's event is in, the earlier ones are too.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from daemon.sources.folder import inotify
from daemon.sources.folder.inotify import IN_Q_OVERFLOW, InotifyObserver
from daemon.sources.folder.watch import INOTIFY_EVENTS

from .support import eventually

pytestmark = pytest.mark.skipif(not inotify.available(), reason="inotify is Linux's")


class Events(FileSystemEventHandler):
    """Every event handed on, as (kind, path): the destination for moves."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []

    def dispatch(self, event: FileSystemEvent) -> None:
        kind = ("dir_" if event.is_directory else "") + event.event_type
        path = event.dest_path if event.event_type == "moved" else event.src_path
        with self._lock:
            self.seen.append((kind, os.fsdecode(path)))

    def paths(self) -> set[str]:
        with self._lock:
            return {path for _, path in self.seen}

    def saw(self, path: Path) -> bool:
        return str(path) in self.paths()


@pytest.fixture
def lost() -> list[int]:
    return []


@pytest.fixture
def watch(tmp_path: Path, lost: list[int]) -> Iterator[tuple[Path, Events, InotifyObserver]]:
    root = tmp_path / "drop"
    root.mkdir()
    events = Events()
    observer = InotifyObserver(lost=lambda: lost.append(1))
    observer.schedule(events, str(root), recursive=True, event_filter=INOTIFY_EVENTS)
    observer.start()
    yield root, events, observer
    observer.stop()
    observer.join(10)


def _marker(root: Path, events: Events, name: str = "marker.png") -> None:
    (root / name).write_bytes(b"m")
    assert eventually(lambda: events.saw(root / name)), f"{name} was never reported"


def test_a_written_file_is_created_then_closed(watch) -> None:
    root, events, _ = watch
    (root / "a.png").write_bytes(b"x" * 100)
    assert eventually(lambda: ("closed", str(root / "a.png")) in events.seen)
    assert events.seen.index(("created", str(root / "a.png"))) < events.seen.index(
        ("closed", str(root / "a.png"))
    )


def test_a_file_renamed_in_is_reported_under_its_new_name(watch, tmp_path: Path) -> None:
    root, events, _ = watch
    (root / "a.png.part").write_bytes(b"x")
    os.rename(root / "a.png.part", root / "a.png")
    outside = tmp_path / "b.png"
    outside.write_bytes(b"y")
    os.rename(outside, root / "b.png")
    assert eventually(lambda: events.saw(root / "a.png") and events.saw(root / "b.png"))
    assert ("moved", str(root / "b.png")) in events.seen


def test_new_nested_folders_are_watched_before_their_event(watch) -> None:
    root, events, observer = watch
    (root / "a" / "b" / "c").mkdir(parents=True)
    assert eventually(lambda: events.saw(root / "a"))
    # The folder's event came after its whole tree was watched: later files are seen.
    assert eventually(lambda: str(root / "a" / "b" / "c").encode() in observer._watches)
    (root / "a" / "b" / "c" / "deep.png").write_bytes(b"x")
    assert eventually(lambda: events.saw(root / "a" / "b" / "c" / "deep.png"))


def test_a_folder_moved_within_the_tree_reports_its_new_paths(watch) -> None:
    root, events, _ = watch
    (root / "old" / "sub").mkdir(parents=True)
    _marker(root, events, "m1.png")
    os.rename(root / "old", root / "new")
    assert eventually(lambda: ("dir_moved", str(root / "new")) in events.seen)
    (root / "new" / "sub" / "x.png").write_bytes(b"x")
    (root / "new" / "top.png").write_bytes(b"t")
    assert eventually(lambda: events.saw(root / "new" / "sub" / "x.png"))
    assert eventually(lambda: events.saw(root / "new" / "top.png"))
    _marker(root, events, "m2.png")
    assert not events.saw(root / "old" / "sub" / "x.png")


def test_a_folder_moved_out_is_no_longer_watched(watch, tmp_path: Path) -> None:
    root, events, observer = watch
    (root / "leaving").mkdir()
    _marker(root, events, "m1.png")
    (root / "leaving" / "sub").mkdir()
    assert eventually(lambda: str(root / "leaving" / "sub").encode() in observer._watches)
    os.rename(root / "leaving", tmp_path / "gone")
    (tmp_path / "gone" / "x.png").write_bytes(b"x")
    (tmp_path / "gone" / "sub" / "y.png").write_bytes(b"y")
    _marker(root, events, "m2.png")
    assert not any(path.endswith(("x.png", "y.png")) for path in events.paths())
    assert not any(b"leaving" in folder for folder in observer._watches)


def test_a_symlinked_folder_is_not_followed(watch, tmp_path: Path) -> None:
    root, events, _ = watch
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    _marker(root, events, "m1.png")
    (outside / "x.png").write_bytes(b"x")
    _marker(root, events, "m2.png")
    assert not any(path.endswith("x.png") for path in events.paths())


def test_a_root_that_is_a_symlink_to_a_folder_is_watched(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    root = tmp_path / "drop"
    os.symlink(real, root)
    events = Events()
    observer = InotifyObserver()
    observer.schedule(events, str(root), recursive=True, event_filter=INOTIFY_EVENTS)
    observer.start()
    try:
        (real / "sub" / "a.png").write_bytes(b"x")
        assert eventually(lambda: events.saw(root / "sub" / "a.png"))
    finally:
        observer.stop()
        observer.join(10)


def test_an_overflowed_queue_asks_for_a_rescan(watch, lost: list[int]) -> None:
    _, _, observer = watch
    with capture_logs() as logs:
        observer._handle(struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0))
    assert lost == [1]
    assert any("overflowed" in entry["event"] for entry in logs)


def test_the_watch_limit_is_logged_once_and_rescans_cover(
    watch, lost: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, events, observer = watch
    real = inotify._libc.add_watch  # type: ignore[union-attr]

    def add_watch(fd: int, path: bytes, mask: int) -> int:
        if b"/full" in path:
            import ctypes

            ctypes.set_errno(errno.ENOSPC)
            return -1
        return real(fd, path, mask)

    monkeypatch.setattr(inotify._libc, "add_watch", add_watch)
    with capture_logs() as logs:
        (root / "full1").mkdir()
        (root / "full2").mkdir()
        assert eventually(lambda: events.saw(root / "full1") and events.saw(root / "full2"))
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1 and "max_user_watches" in errors[0]["fix"]
    assert len(lost) >= 2  # each folder it could not watch: a rescan looks


def test_the_root_removed_makes_it_unhealthy(watch) -> None:
    root, _, observer = watch
    assert observer.healthy()
    os.rmdir(root)
    assert eventually(lambda: not observer.healthy())


def test_a_root_that_cannot_be_watched_fails_to_start(tmp_path: Path) -> None:
    observer = InotifyObserver()
    observer.schedule(Events(), str(tmp_path / "missing"), recursive=True)
    with pytest.raises(OSError):
        observer.start()
    assert not observer.is_alive()


def test_stop_ends_the_thread(watch) -> None:
    _, _, observer = watch
    observer.stop()
    observer.join(10)
    assert not observer.is_alive()
