"""The root index keeps what it last wrote and merges each finished plan into it (issue 16):
it must still see every change another writer made, and never hand out a stale version."""

from __future__ import annotations

import json
import os

from daemon.outputs.index import INDEX_JSON, IndexEntry, load_index, update_index
from daemon.sinks.folder import FolderSink


def entry(name: str, created: str = "2026-11-28T00:00:00Z") -> IndexEntry:
    return IndexEntry(manifest=f"r/{name}/manifest.json", rule="r", key=name, created_at=created)


def manifests(sink: FolderSink) -> list[str]:
    return [e.manifest for e in load_index(sink, rebuild=False)]


def test_entries_another_writer_added_are_kept(tmp_path):
    mine, theirs = FolderSink("out", tmp_path), FolderSink("out", tmp_path)  # two daemons
    update_index(mine, entry("a"))
    update_index(theirs, entry("b"))
    update_index(mine, entry("c"))
    assert manifests(mine) == ["r/a/manifest.json", "r/b/manifest.json", "r/c/manifest.json"]


def test_an_index_replaced_by_hand_is_read_again(tmp_path):
    sink = FolderSink("out", tmp_path)
    update_index(sink, entry("a"))
    # Someone restores an older index (a backup, an editor): same size, written in place.
    path = tmp_path / INDEX_JSON
    data = path.read_bytes()
    edited = data.replace(b"r/a/manifest.json", b"r/x/manifest.json")
    assert len(edited) == len(data)
    with open(path, "r+b") as fh:
        fh.write(edited)
    update_index(sink, entry("b"))
    assert manifests(sink) == ["r/b/manifest.json", "r/x/manifest.json"]


def test_a_version_is_the_content_not_a_remembered_stamp(tmp_path):
    sink = FolderSink("out", tmp_path)
    sink.write("f.json", b'{"n": 1}')
    first = sink.version("f.json")
    assert sink.version("f.json") == first == sink.version_of(b'{"n": 1}')
    stat = os.stat(tmp_path / "f.json")
    with open(tmp_path / "f.json", "r+b") as fh:  # same size, in place, at once
        fh.write(b'{"n": 2}')
    os.utime(tmp_path / "f.json", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back
    assert sink.version("f.json") == sink.version_of(b'{"n": 2}') != first


def test_replacing_an_entry_keeps_one_per_manifest_in_order(tmp_path):
    sink = FolderSink("out", tmp_path)
    update_index(sink, entry("b", "2026-11-02T00:00:00Z"))
    update_index(sink, entry("a", "2026-11-03T00:00:00Z"))
    update_index(sink, entry("b", "2026-11-04T00:00:00Z"))  # b published again, later
    assert manifests(sink) == ["r/a/manifest.json", "r/b/manifest.json"]
    data = json.loads((tmp_path / INDEX_JSON).read_bytes())
    assert [e["created_at"] for e in data["entries"]] == [
        "2026-11-03T00:00:00Z",
        "2026-11-04T00:00:00Z",
    ]
