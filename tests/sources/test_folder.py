"""FolderSource on the real filesystem, with real watchdog observers and threads."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from structlog.testing import capture_logs

from daemon.errors import InputError
from daemon.sources.folder import FolderSource, is_ignored

from .support import (
    QUIET,
    DeafFolderSource,
    Recorder,
    eventually,
    rescans,
    settle,
    wait_for_log,
    write,
)


def test_file_written_in_chunks_is_emitted_once_after_last_write(drop, recorder, start_source):
    source = start_source(drop, quiet_period=0.8)
    path = drop / "big.jpg"
    seen_pending = False
    with open(path, "wb", buffering=0) as f:
        for _ in range(20):  # ~2 s of writing, 0.1 s apart: never quiet for 0.8 s
            f.write(b"y" * 1000)
            time.sleep(0.1)
            seen_pending = seen_pending or source.pending_count() == 1
        last_write = time.monotonic()
    assert seen_pending
    assert recorder.wait_for_keys("big.jpg")
    settle(source, recorder)
    assert recorder.counts() == {"big.jpg": 1}
    arrival = recorder.last("big.jpg")
    assert arrival.size == 20_000
    assert arrival.uri == str(path)
    assert arrival.source == "drop"
    assert arrival.mtime_ns == path.stat().st_mtime_ns
    assert recorder.times[0] >= last_write
    assert source.pending_count() == 0


class _CountingSource(FolderSource):
    events = 0

    def _record_event(self, event):  # type: ignore[no-untyped-def]
        type(self).events += 1
        super()._record_event(event)


def test_a_file_copied_in_many_writes_costs_a_few_events_not_one_per_write(
    drop, recorder, start_source
):
    # inotify sends "modified" for every write() call: a photo copied in 64 KiB chunks is
    # hundreds of events, each a trip through watchdog's threads. The close says it all.
    source = start_source(drop, cls=_CountingSource)
    with open(drop / "photo.jpg", "wb", buffering=0) as f:
        for _ in range(500):
            f.write(b"z" * 100)
    assert recorder.wait_for_keys("photo.jpg")
    settle(source, recorder)
    assert recorder.last("photo.jpg").size == 50_000
    assert _CountingSource.events < 10


def test_part_file_renamed_is_emitted_once_under_final_name(drop, recorder, start_source):
    source = start_source(drop)
    part = write(drop / "x.jpg.part", b"a" * 500)
    settle(source, recorder)  # the .part file is complete and quiet: still never a candidate
    part.rename(drop / "x.jpg")
    assert recorder.wait_for_keys("x.jpg")
    settle(source, recorder)
    assert recorder.counts() == {"x.jpg": 1}
    assert recorder.last("x.jpg").size == 500


@pytest.mark.parametrize(
    ("temp", "final"),
    [
        (".x.jpg.AbC123", "x.jpg"),  # rsync
        ("photo.jpg.crdownload", "photo.jpg"),  # Chrome
        ("sub/.upload.png.XyZ", "sub/upload.png"),
    ],
)
def test_temp_name_then_rename(drop, recorder, start_source, temp, final):
    source = start_source(drop)
    tmp = write(drop / temp)
    settle(source, recorder)  # the temp file is complete and quiet: still never a candidate
    tmp.rename(drop / final)
    assert recorder.wait_for_keys(final)
    settle(source, recorder)
    assert recorder.counts() == {final: 1}


def test_temp_hidden_and_lock_files_are_never_emitted(drop, recorder, start_source):
    source = start_source(drop, ignore=["**/thumbs/**", "*.txt"])
    for name in [
        "x.crdownload",
        ".hidden.jpg",
        ".dotdir/a.jpg",
        "sub/.git/objects/a.jpg",
        "~$report.jpg",
        "y.tmp",
        "Z.PART",
        "a.filepart",
        "a.partial",
        "a.download",
        "sub/thumbs/a.jpg",
        "notes.txt",
    ]:
        write(drop / name)
    write(drop / "ok.jpg")
    assert recorder.wait_for_keys("ok.jpg")
    settle(source, recorder)
    assert recorder.emitted_keys() == ["ok.jpg"]


def test_is_ignored():
    assert is_ignored(".x.jpg.AbC123")
    assert is_ignored("a/.cache/x.jpg")
    assert is_ignored("~$x.jpg")
    assert is_ignored("x.JPG.Part")
    assert is_ignored("raw/x.jpg", ["raw/**"])
    assert not is_ignored("a/b.c/x.jpg")
    assert not is_ignored("x.jpg", ["raw/**"])


def test_startup_scan_finds_files_present_before_start(drop, recorder, start_source):
    write(drop / "a.jpg")
    write(drop / "deep/er/b.png", b"")  # zero-byte files are emitted too
    source = start_source(drop)
    assert recorder.wait_for_keys("a.jpg", "deep/er/b.png")
    settle(source, recorder)
    assert recorder.counts() == {"a.jpg": 1, "deep/er/b.png": 1}
    assert recorder.last("deep/er/b.png").size == 0


def test_known_files_are_skipped_by_scans(drop, recorder, start_source):
    old = write(drop / "old.jpg")
    write(drop / "new.jpg")
    st = old.stat()
    handled = {("old.jpg", st.st_size, st.st_mtime_ns)}
    calls: list[tuple[str, int, int]] = []

    def known(key: str, size: int, mtime_ns: int) -> bool:
        calls.append((key, size, mtime_ns))
        return (key, size, mtime_ns) in handled

    source = start_source(drop, known=known)
    assert recorder.wait_for_keys("new.jpg")
    settle(source, recorder)
    assert recorder.emitted_keys() == ["new.jpg"]
    assert ("old.jpg", st.st_size, st.st_mtime_ns) in calls
    # old.jpg is remembered as handled: later scans do not ask again
    n = sum(1 for c in calls if c[0] == "old.jpg")
    source.scan()
    assert sum(1 for c in calls if c[0] == "old.jpg") == n


def test_lost_event_is_found_by_scan(drop, recorder, start_source):
    write(drop / "sentinel.jpg")
    source = start_source(drop, cls=DeafFolderSource)
    assert recorder.wait_for_keys("sentinel.jpg")  # the startup scan is over
    write(drop / "lost.jpg")
    # No barrier is possible here: any scan would find lost.jpg, and no event can ever come.
    # The wait only gives a wrong source time to emit it; it cannot fail a right one.
    time.sleep(QUIET * 2)
    assert "lost.jpg" not in recorder.emitted_keys()  # no event ever came
    source.scan()
    assert recorder.wait_for_keys("lost.jpg")
    settle(source, recorder)
    assert recorder.counts() == {"sentinel.jpg": 1, "lost.jpg": 1}


def test_periodic_rescan_recovers_lost_events(drop, recorder, start_source):
    source = start_source(drop, cls=DeafFolderSource, rescan_interval=0.5)
    write(drop / "a/lost.jpg")
    assert recorder.wait_for_keys("a/lost.jpg")
    begun = rescans(source)
    assert eventually(lambda: rescans(source) >= begun + 3)  # two more whole rescans
    settle(source, recorder)
    assert recorder.counts() == {"a/lost.jpg": 1}


def test_modified_file_is_emitted_again(drop, recorder, start_source):
    source = start_source(drop, rescan_interval=0.5)
    path = write(drop / "a.jpg", b"one")
    assert recorder.wait_for_keys("a.jpg")
    with open(path, "ab") as f:
        f.write(b" and two")
    assert eventually(lambda: recorder.counts()["a.jpg"] == 2)
    settle(source, recorder)
    assert recorder.counts() == {"a.jpg": 2}
    assert [a.size for a in recorder.snapshot()] == [3, 11]


def test_emit_raising_does_not_stop_later_emits(drop, start_source):
    good = Recorder()
    raised: list[str] = []

    def emit(arrival):
        if arrival.key.startswith("bad"):
            raised.append(arrival.key)
            raise RuntimeError("boom")
        good(arrival)

    start_source(drop, emit=emit)
    write(drop / "bad1.jpg")
    write(drop / "bad2.jpg")
    assert eventually(lambda: sorted(raised) == ["bad1.jpg", "bad2.jpg"])  # both emits raised
    write(drop / "good.jpg")
    assert good.wait_for_keys("good.jpg")


def test_mkdir_p_with_files_written_at_once(drop, recorder, start_source):
    source = start_source(drop)
    deep = drop / "a" / "b" / "c"
    os.makedirs(deep)
    keys = []
    for i in range(5):
        (deep / f"f{i}.jpg").write_bytes(b"z" * i)
        keys.append(f"a/b/c/f{i}.jpg")
    (drop / "a" / "top.jpg").write_bytes(b"t")
    keys.append("a/top.jpg")
    assert recorder.wait_for_keys(*keys)
    settle(source, recorder)
    assert recorder.counts() == dict.fromkeys(keys, 1)


def test_directory_moved_in_is_scanned(drop, tmp_path, recorder, start_source):
    source = start_source(drop)
    outside = tmp_path / "upload"
    write(outside / "x/one.jpg")
    write(outside / "two.jpg")
    outside.rename(drop / "batch")
    assert recorder.wait_for_keys("batch/x/one.jpg", "batch/two.jpg")
    settle(source, recorder)
    assert recorder.counts() == {"batch/x/one.jpg": 1, "batch/two.jpg": 1}


def test_a_folder_event_gates_every_file_in_the_folder(drop, tmp_path):
    """Files written into a folder before its watch existed send no events: the folder's own
    event (created, or moved in) has the gate scan it."""
    source = FolderSource("drop", drop, quiet_period=QUIET, rescan_interval=60.0)
    write(drop / "made" / "deep" / "one.jpg")
    write(tmp_path / "upload" / "x" / "two.jpg")
    (tmp_path / "upload").rename(drop / "moved")
    source._quiet.event(str(drop / "made"), directory=True)
    source._quiet.event(str(drop / "moved"), directory=True)
    source._take_events()  # what the gate thread does each tick
    assert source.pending_count() == 2


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
def test_root_deleted_and_recreated(drop, recorder, start_source, poll):
    with capture_logs() as logs:
        start_source(drop, poll=poll)
        write(drop / "before.jpg")
        assert recorder.wait_for_keys("before.jpg")
        shutil.rmtree(drop)
        assert eventually(lambda: any("missing" in e["event"] for e in logs), 5)
        drop.mkdir()  # the source has said it is missing: recreated after it looked
        write(drop / "first.jpg")  # found by the scan that follows the restart
        assert recorder.wait_for_keys("first.jpg")
        write(drop / "second.jpg")  # rescans are 60 s apart: only a live watch sees this
        assert recorder.wait_for_keys("second.jpg", timeout=5)
    assert sum("missing" in e["event"] for e in logs) == 1
    assert all(e.get("source") == "drop" for e in logs if e["log_level"] == "warning")


def test_root_replaced_between_ticks(drop, recorder, start_source):
    with capture_logs() as logs:
        start_source(drop)
        write(drop / "before.jpg")
        assert recorder.wait_for_keys("before.jpg")
        shutil.rmtree(drop)
        drop.mkdir()
        # Noticed as replaced (a new watch) or, when a tick fell in between, as back again.
        wait_for_log(logs, "restarting folder watch", "watched folder is present")
        write(drop / "after.jpg")
        assert recorder.wait_for_keys("after.jpg", timeout=5)


def test_root_missing_at_start(tmp_path, recorder, start_source):
    root = tmp_path / "not-yet"
    with capture_logs() as logs:
        source = start_source(root)
        wait_for_log(logs, "watched folder is missing or not a directory; waiting for it")
        source.scan()  # no crash either
        root.mkdir()
        write(root / "a.jpg")
        assert recorder.wait_for_keys("a.jpg")
    assert any(e["log_level"] == "warning" and "missing" in e["event"] for e in logs)


def test_vanished_candidate_is_dropped(drop, recorder, start_source):
    source = start_source(drop, quiet_period=0.5)
    path = write(drop / "gone.jpg")
    assert eventually(lambda: source.pending_count() == 1)  # a candidate, then gone
    path.unlink()
    write(drop / "stays.jpg")
    assert recorder.wait_for_keys("stays.jpg")
    settle(source, recorder)
    assert recorder.emitted_keys() == ["stays.jpg"]


def test_symlinks_are_not_emitted(drop, tmp_path, recorder, start_source):
    secret = write(tmp_path / "outside" / "secret.jpg")
    source = start_source(drop)
    os.symlink(secret, drop / "link.jpg")
    os.symlink(secret.parent, drop / "linkdir")
    write(drop / "real.jpg")
    assert recorder.wait_for_keys("real.jpg")
    settle(source, recorder)
    assert recorder.emitted_keys() == ["real.jpg"]
    with pytest.raises(InputError, match="symlink"):
        source.read("link.jpg")
    with pytest.raises(InputError, match="symlink"):
        source.read("linkdir/secret.jpg")


def test_read(drop, start_source):
    source = start_source(drop)
    path = write(drop / "sub/a.jpg", b"\xff\xd8bytes")
    before = path.stat()
    assert source.read("sub/a.jpg") == b"\xff\xd8bytes"
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_read_errors(drop, start_source):
    source = start_source(drop)
    with pytest.raises(InputError, match=r"drop/nope\.jpg: file vanished before it could be read"):
        source.read("nope.jpg")
    (drop / "adir").mkdir()
    with pytest.raises(InputError, match="adir: is a directory"):
        source.read("adir")
    for bad in ["../escape.jpg", "a/../../x", "/etc/passwd"]:
        with pytest.raises(InputError, match="escapes the source folder"):
            source.read(bad)
    with pytest.raises(InputError, match="invalid key"):
        source.read("")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_read_permission_denied(drop, start_source):
    source = start_source(drop)
    path = write(drop / "locked.jpg")
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="locked.jpg: permission denied"):
            source.read("locked.jpg")
    finally:
        path.chmod(0o644)


def test_stop_is_prompt_and_idempotent(drop, recorder, start_source):
    source = start_source(drop, poll=False)
    write(drop / "a.jpg")
    stop_twice = threading.Thread(target=lambda: (source.stop(), source.stop()))
    stop_twice.start()
    stop_twice.join(30)  # generous; a stop waiting for the 60 s rescan would not make it
    assert not stop_twice.is_alive()
    names = {t.name for t in threading.enumerate()}
    assert not any(n.startswith("darkroom-") for n in names)
    write(drop / "b.jpg")
    # No barrier exists: a stopped source does nothing to wait for. The wait only gives a
    # wrong source time to emit b.jpg; it cannot fail a right one.
    time.sleep(QUIET * 1.5)
    assert "b.jpg" not in recorder.emitted_keys()


def test_stop_polling_is_prompt(drop, start_source):
    source = start_source(drop, poll=True)
    stopping = threading.Thread(target=source.stop)
    stopping.start()
    stopping.join(30)  # generous; a stop waiting for the 60 s rescan would not make it
    assert not stopping.is_alive()


def test_start_twice_is_refused(drop, recorder, start_source):
    source = start_source(drop)
    with pytest.raises(RuntimeError, match="already started"):
        source.start(recorder, lambda *a: False)


def test_polling_observer_emits_a_file(drop, recorder, start_source):
    write(drop / "sentinel.jpg")
    source = start_source(drop, poll=True)
    assert recorder.wait_for_keys("sentinel.jpg")  # startup scan done; rescans are 60 s apart
    write(drop / "polled.jpg")
    assert recorder.wait_for_keys("polled.jpg", timeout=6)
    settle(source, recorder)
    assert recorder.counts() == {"sentinel.jpg": 1, "polled.jpg": 1}


def test_burst_of_2000_files_is_emitted_exactly_once_each(drop, recorder, start_source):
    source = start_source(drop, rescan_interval=0.5)  # rescans race the watch on purpose
    keys = []
    for i in range(2000):
        key = f"d{i % 4}/img{i:04d}.jpg"
        keys.append(key)
        write(drop / key, b"p" * (i % 50))
    assert eventually(lambda: len(set(recorder.emitted_keys())) == 2000, timeout=20)
    begun = rescans(source)
    assert eventually(lambda: rescans(source) >= begun + 3, timeout=20)  # two more whole rescans
    settle(source, recorder)
    counts = recorder.counts()
    assert set(counts) == set(keys)
    assert max(counts.values()) == 1
    assert source.pending_count() == 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="unclosed"):
        FolderSource("s", "/tmp", ignore=["[abc"])
    with pytest.raises(ValueError, match="list of glob patterns"):
        FolderSource("s", "/tmp", ignore="*.txt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rescan_interval"):
        FolderSource("s", "/tmp", rescan_interval=0)


class _BrokenWatchSource(FolderSource):
    def _new_observer(self):  # type: ignore[override]
        raise OSError(28, "inotify watch limit reached")


def test_watch_that_cannot_start_falls_back_to_rescans(drop, recorder, start_source):
    with capture_logs() as logs:
        start_source(drop, cls=_BrokenWatchSource, rescan_interval=0.5)
        write(drop / "a.jpg")
        assert recorder.wait_for_keys("a.jpg")
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1
    assert "inotify watch limit" in errors[0]["error"]


class _FlakyHandlerSource(FolderSource):
    def _record_event(self, event):  # type: ignore[override]
        if "boom" in str(event.src_path) + str(getattr(event, "dest_path", "")):
            raise RuntimeError("handler bug")
        super()._record_event(event)


def test_handler_exception_does_not_kill_the_watch(drop, recorder, start_source):
    write(drop / "sentinel.jpg")
    with capture_logs() as logs:
        start_source(drop, cls=_FlakyHandlerSource)
        assert recorder.wait_for_keys("sentinel.jpg")  # past the startup scan: only events now
        write(drop / "boom.jpg")
        wait_for_log(logs, "watch event dropped")
        write(drop / "ok.jpg")
        assert recorder.wait_for_keys("ok.jpg")
    assert any(e["event"] == "watch event dropped" for e in logs)


def test_folder_changes_are_found_by_events_alone_each_file_once(
    drop, tmp_path, recorder, start_source
):
    """Folders made with files at once, moved in, renamed while files are written into them,
    nested four deep: every file is emitted once, with the rescan an hour away (what the
    watch sends, and the scans of the folders it reports, find them all)."""
    import random

    source = start_source(drop, rescan_interval=3600.0)
    settle(source, recorder)  # the watch is up; what follows is found without a rescan
    rng, stage, expected = random.Random(7), tmp_path / "stage", []
    for n in range(30):
        kind = rng.choice(["made", "moved_in", "renamed", "nested"])
        if kind == "made":
            expected += [
                write(drop / f"r{n}" / "a" / "b" / f"f{i}.jpg", b"x" * (i + 1)) for i in range(5)
            ]
        elif kind == "moved_in":
            for i in range(5):
                write(stage / f"m{n}" / "x" / f"g{i}.jpg", b"y" * (i + 1))
            (stage / f"m{n}").rename(drop / f"m{n}")
            expected += [drop / f"m{n}" / "x" / f"g{i}.jpg" for i in range(5)]
        elif kind == "renamed":
            (drop / f"old{n}" / "sub").mkdir(parents=True)
            (drop / f"old{n}").rename(drop / f"new{n}")
            expected += [
                write(drop / f"new{n}" / "sub" / f"h{i}.jpg", b"z" * (i + 1)) for i in range(3)
            ]
        else:
            folder = drop / f"n{n}"
            for depth in range(4):
                folder = folder / f"d{depth}"
                expected.append(write(folder / "k.jpg", b"k"))
    keys = [str(path.relative_to(drop)) for path in expected]
    assert recorder.wait_for_keys(*keys, timeout=30)
    marker = write(drop / "zz-last.jpg")  # emitted after everything before it
    assert recorder.wait_for_keys(str(marker.relative_to(drop)))
    assert recorder.counts() == dict.fromkeys([*keys, "zz-last.jpg"], 1)
