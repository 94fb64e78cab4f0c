"""A folder sink never writes, reads or locks through a symlink inside it, whether the
folders below the symlink exist yet or not, and its files follow the process umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.errors import EnvironmentFault, OutputError
from daemon.sinks.folder import LOCK_NAME, FolderSink


@pytest.fixture
def sink_and_elsewhere(tmp_path: Path) -> tuple[FolderSink, Path]:
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return FolderSink("out", out), elsewhere


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture
def umask_0027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_write_into_a_symlinked_existing_folder_is_refused(sink_and_elsewhere):
    sink, elsewhere = sink_and_elsewhere
    os.symlink(elsewhere, sink.root / "q")
    with pytest.raises(EnvironmentFault, match=r"q is a symlink.*hint: remove the symlink"):
        sink.write("q/x.png", b"png bytes")
    assert _files(elsewhere) == []


def test_write_below_a_symlinked_folder_whose_subfolders_do_not_exist_yet_is_refused(
    sink_and_elsewhere,
):
    """The issue's escape: q/newdir/x.png under a symlinked q."""
    sink, elsewhere = sink_and_elsewhere
    os.symlink(elsewhere, sink.root / "q")
    with pytest.raises(EnvironmentFault, match="symlink"):
        sink.write("q/newdir/deeper/x.png", b"png bytes")
    assert _files(elsewhere) == [], "a folder or file was created outside the sink"


def test_symlinks_planted_at_the_lock_and_output_names_are_never_followed(sink_and_elsewhere):
    sink, elsewhere = sink_and_elsewhere
    os.symlink(elsewhere / "created-by-the-daemon", sink.root / LOCK_NAME)
    with pytest.raises(OutputError, match="cannot lock"):
        sink.write_if("index.json", b"{}", replacing=None)
    assert _files(elsewhere) == []
    # An output name that is a symlink (a review page pointing at another page) is replaced.
    victim = elsewhere / "victim.html"
    victim.write_text("the operator's page")
    (sink.root / "r").mkdir()
    os.symlink(victim, sink.root / "r" / "index.html")
    sink.write("r/index.html", b"<html>review</html>")
    assert victim.read_text() == "the operator's page"
    assert (sink.root / "r" / "index.html").read_bytes() == b"<html>review</html>"
    assert not (sink.root / "r" / "index.html").is_symlink()


def test_reads_and_listings_do_not_follow_a_symlinked_folder(sink_and_elsewhere):
    sink, elsewhere = sink_and_elsewhere
    (elsewhere / "secret.txt").write_text("secret")
    os.symlink(elsewhere, sink.root / "q")
    with pytest.raises(OutputError, match="symlink"):
        sink.read("q/secret.txt")
    assert not sink.exists("q/secret.txt")
    assert sink.list() == []
    assert sink.version("q/secret.txt") is None


def test_outputs_and_folders_follow_the_umask(sink_and_elsewhere, umask_0027):
    sink, _ = sink_and_elsewhere
    sink.write("r/a/x.png", b"png bytes")
    sink.write_manifest("r/a/manifest.json", b"{}")
    for name in ("r/a/x.png", "r/a/manifest.json"):
        mode = stat.S_IMODE((sink.root / name).stat().st_mode)
        assert mode == 0o640, f"{name} is {oct(mode)}, the umask asks for 0o640"
    assert stat.S_IMODE((sink.root / "r" / "a").stat().st_mode) == 0o750
    assert [p for p in _files(sink.root) if p.endswith(".tmp")] == []
