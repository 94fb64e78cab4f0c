"""Issue 16: a periodic rescan stats only what may have changed, and still finds everything.

A folder whose names did not change since the last rescan cannot hold a new file, so most
periodic passes stat only files that are new to the gate; every ``FULL_RESCAN_EVERY``-th
pass stats every file, which finds a file rewritten in place while its events were lost.
"""

from __future__ import annotations

from daemon.sources.folder.complete import FULL_RESCAN_EVERY

from .support import DeafFolderSource, eventually, write


def test_a_new_name_is_found_by_the_next_periodic_rescan(drop, recorder, start_source):
    write(drop / "a/one.jpg")
    source = start_source(drop, cls=DeafFolderSource)
    assert recorder.wait_for_keys("a/one.jpg")  # the startup scan (a full one)
    source.scan(periodic=True)  # the first periodic pass is a full one too
    write(drop / "a/two.jpg")
    source.scan(periodic=True)  # not full: the folder's names changed, so it is looked at
    assert recorder.wait_for_keys("a/two.jpg")
    assert recorder.counts() == {"a/one.jpg": 1, "a/two.jpg": 1}


def test_a_file_rewritten_in_place_without_events_is_found_within_the_full_pass(
    drop, recorder, start_source
):
    path = write(drop / "a/photo.jpg", b"first version")
    source = start_source(drop, cls=DeafFolderSource)
    assert recorder.wait_for_keys("a/photo.jpg")
    source.scan(periodic=True)  # full: the folder's stamp is recorded
    with open(path, "r+b") as f:  # in place: the folder's names (and its mtime) stay
        f.write(b"second version, longer")
    for _ in range(FULL_RESCAN_EVERY):
        source.scan(periodic=True)
    assert eventually(lambda: recorder.counts().get("a/photo.jpg") == 2)
    assert [a.size for a in recorder.snapshot()] == [13, 22]
