"""Issue 14, item 3: uploads in progress are never mistaken for bad files.

A writer that pauses longer than the quiet period, rsync ``--partial`` (the partial renamed to
the final name, the resume renamed over it) and a re-export while the first version is queued
all end processed, never quarantined; the quarantine only moves the bytes that failed; a file
that really is truncated is held in place for ``truncated_grace`` first."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from daemon.errors import InputChanged
from daemon.sources.folder import FolderSource
from daemon.sources.uploads import FileStamp, UploadWatch, looks_truncated
from tests.reliability.conftest import RULE, Harness

WAITING = "waiting: looks like an upload in progress"


def photo(seed: int = 1, side: int = 384) -> bytes:
    """A complete JPEG big enough to be written in several chunks (noise compresses badly)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the pieces -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_looks_truncated_tells_cut_off_files_from_corrupt_ones():
    data = photo()
    assert looks_truncated(b"", "the file is empty")
    assert looks_truncated(data[:2], "not an image Pillow can read")  # inside the header
    assert looks_truncated(data[: len(data) // 2], "cannot decode image: ...")
    assert not looks_truncated(b"this is text, not a picture\n" * 4, "not an image")
    assert not looks_truncated(data[:-2] + b"\xff\xd9", "cannot decode image: bad huffman")


def test_the_watch_waits_for_the_grace_and_for_the_same_bytes():
    clock = Clock()
    files: dict[str, tuple[FileStamp, str]] = {"a.jpg": (FileStamp(10, 1, 7), "h1")}
    watch = UploadWatch(
        quiet_period=1.0,
        truncated_grace=30.0,
        stamp=lambda key: files[key][0] if key in files else None,
        digest=lambda key: files[key][1] if key in files else None,
        clock=clock,
    )
    assert watch.verdict("a.jpg", "h1", truncated=True).state == "waiting"
    clock.now += 29
    assert watch.verdict("a.jpg", "h1", truncated=True).state == "waiting"
    clock.now += 2
    assert watch.verdict("a.jpg", "h1", truncated=True).state == "settled"

    # A corrupt (not truncated) file needs one more quiet period only.
    files["b.jpg"] = (FileStamp(5, 1, 8), "hb")
    assert watch.verdict("b.jpg", "hb", truncated=False).state == "waiting"
    clock.now += 1.5
    assert watch.verdict("b.jpg", "hb", truncated=False).state == "settled"

    # Touched but the same bytes: the wait starts again. New bytes: a new version.
    files["c.jpg"] = (FileStamp(5, 1, 9), "hc")
    assert watch.verdict("c.jpg", "hc", truncated=True).state == "waiting"
    clock.now += 20
    files["c.jpg"] = (FileStamp(5, 2, 9), "hc")
    assert watch.verdict("c.jpg", "hc", truncated=True).state == "waiting"
    clock.now += 20
    assert watch.verdict("c.jpg", "hc", truncated=True).state == "waiting"
    files["c.jpg"] = (FileStamp(9, 3, 9), "hc2")
    assert watch.verdict("c.jpg", "hc", truncated=True).state == "changed"
    del files["a.jpg"]
    assert watch.verdict("a.jpg", "h1", truncated=True).state == "changed"


def test_the_quarantine_refuses_to_move_a_file_whose_bytes_changed(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    source = FolderSource("drop", drop)
    failed = photo()[:5000]
    (drop / "a.jpg").write_bytes(photo())  # a re-export replaced the bytes that failed
    record = {"key": "a.jpg", "sha256": sha(failed), "reason": "cannot decode image"}
    with pytest.raises(InputChanged):
        source.quarantine("a.jpg", record, None)
    assert (drop / "a.jpg").read_bytes() == photo()
    assert not (drop / ".quarantine").exists() or not any((drop / ".quarantine").iterdir())

    (drop / "a.jpg").write_bytes(failed)  # the very bytes that failed: moved
    where = source.quarantine("a.jpg", record, None)
    assert Path(where).read_bytes() == failed and not (drop / "a.jpg").exists()
    assert json.loads(Path(where + ".reason.json").read_text())["sha256"] == sha(failed)


# -- the daemon -------------------------------------------------------------------------------


@pytest.fixture
def harness(tmp_path: Path, model_cache: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, model_cache)
    yield h
    h.stop()


def _plans(harness: Harness, key: str) -> list:
    return list(harness.ledger.plans(key))


def _waiting_on(harness: Harness, key: str, data: bytes) -> bool:
    """The daemon took these (partial) bytes and holds them, saying why."""
    plans = {p["id"]: p for p in _plans(harness, key) if p["sha256"] == sha(data)}
    return any(
        j["plan_id"] in plans and WAITING in (j["error"] or "") for j in harness.ledger.jobs(key)
    )


def _ends_processed(harness: Harness, key: str, data: bytes) -> None:
    """The complete bytes end done; every plan of the key ends; nothing was quarantined."""
    harness.wait(
        lambda: any(
            p["sha256"] == sha(data) and p["state"] == "done" for p in _plans(harness, key)
        ),
        60,
        f"the complete {key} to be processed: {[dict(p) for p in _plans(harness, key)]}",
    )
    harness.wait(
        lambda: all(p["state"] != "active" for p in _plans(harness, key)),
        60,
        f"the partial versions of {key} to end",
    )
    assert harness.ledger.quarantine() == []
    assert (harness.drop / key).read_bytes() == data
    assert not harness.quarantine_dir.exists() or not any(harness.quarantine_dir.rglob("*"))
    for plan in _plans(harness, key):
        if plan["sha256"] != sha(data):
            errors = [j["error"] for j in harness.ledger.jobs(key) if j["plan_id"] == plan["id"]]
            assert all("changed" in (e or "") for e in errors), errors


class PausingWriter(threading.Thread):
    """Writes ``chunks`` into one open file; after each but the last it pauses until the test
    says go on (the daemon meanwhile sees a file that has been still for its quiet period)."""

    def __init__(self, path: Path, chunks: list[bytes]):
        super().__init__(daemon=True)
        self.path = path
        self.chunks = chunks
        self.go_on = [threading.Event() for _ in chunks[:-1]]

    def run(self) -> None:
        with open(self.path, "wb") as out:
            for index, chunk in enumerate(self.chunks):
                out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                if index < len(self.go_on):
                    self.go_on[index].wait(120)


def test_a_writer_that_pauses_longer_than_the_quiet_period_ends_processed(harness):
    harness.rule(RULE)
    harness.start(quiet_period=0.2, source_extra=", truncated_grace: 60")
    data = photo()
    cuts = [len(data) // 4, len(data) // 2, 3 * len(data) // 4]
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    writer = PausingWriter(harness.drop / "slow.jpg", chunks)
    writer.start()
    for index, cut in enumerate(cuts):
        # The pause outlasted the quiet period: the daemon took the partial file, and it
        # waits in place with a visible reason instead of quarantining it.
        harness.wait(lambda: _waiting_on(harness, "slow.jpg", data[:cut]), 30, f"pause {index}")
        assert (harness.drop / "slow.jpg").exists()
        writer.go_on[index].set()
    writer.join(30)
    _ends_processed(harness, "slow.jpg", data)


def test_rsync_partial_resumed_by_a_rename_ends_processed(harness):
    harness.rule(RULE)
    harness.start(quiet_period=0.2, source_extra=", truncated_grace: 60")
    data = photo(seed=2)
    partial = data[: len(data) * 2 // 5]
    # Interrupted: rsync --partial renames what it has to the final name.
    (harness.drop / ".photo.jpg.AbC123").write_bytes(partial)
    os.rename(harness.drop / ".photo.jpg.AbC123", harness.drop / "photo.jpg")
    harness.wait(lambda: _waiting_on(harness, "photo.jpg", partial), 30, "the partial held")
    assert (harness.drop / "photo.jpg").read_bytes() == partial  # left for the resume
    # The resume writes a temp file and renames it over the partial.
    (harness.drop / ".photo.jpg.XyZ789").write_bytes(data)
    os.rename(harness.drop / ".photo.jpg.XyZ789", harness.drop / "photo.jpg")
    _ends_processed(harness, "photo.jpg", data)


def test_a_re_export_while_the_first_version_is_queued_is_processed(harness):
    first, second = photo(seed=3), photo(seed=4)
    exported = threading.Event()

    def sources(settings):
        source = FolderSource.from_config("drop", settings.sources["drop"])
        real_read = source.read

        def read(key, etag=None):
            data = real_read(key, etag)
            if key == "export.jpg" and not exported.is_set():
                # The first version was just read for planning; the photographer exports
                # again before its job runs.
                exported.set()
                (harness.drop / ".export.jpg.tmp").write_bytes(second)
                os.replace(harness.drop / ".export.jpg.tmp", harness.drop / "export.jpg")
            return data

        source.read = read  # type: ignore[method-assign]
        return {"drop": source}

    harness.rule(RULE)
    harness.start(quiet_period=0.2, source_factory=sources)
    (harness.drop / "export.jpg").write_bytes(first)
    harness.wait(exported.is_set, 20, "the first version to be read")
    _ends_processed(harness, "export.jpg", second)
    assert any(p["sha256"] == sha(first) for p in _plans(harness, "export.jpg"))


def test_a_truncated_file_that_stays_unchanged_is_quarantined_after_the_grace(harness):
    harness.rule(RULE)
    harness.start(quiet_period=0.2, source_extra=", truncated_grace: 1")
    data = photo(seed=5)[:3000]
    (harness.drop / "cut.jpg").write_bytes(data)
    harness.wait(lambda: _waiting_on(harness, "cut.jpg", data), 30, "the waiting record")
    harness.wait(lambda: harness.ledger.quarantine(), 30, "the quarantine after the grace")
    [row] = harness.ledger.quarantine()
    assert row["key"] == "cut.jpg" and "cannot decode" in row["reason"]
    assert (harness.quarantine_dir / "cut.jpg").read_bytes() == data


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_real_rsync_inplace_over_a_slow_link_ends_processed(harness, tmp_path):
    harness.rule(RULE)
    harness.start(quiet_period=0.2, source_extra=", truncated_grace: 60")
    data = photo(seed=6, side=512)
    src = tmp_path / "src.jpg"
    src.write_bytes(data)
    done = subprocess.run(
        ["rsync", "--inplace", "--bwlimit=64", str(src), str(harness.drop / "rsynced.jpg")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    _ends_processed(harness, "rsynced.jpg", data)
