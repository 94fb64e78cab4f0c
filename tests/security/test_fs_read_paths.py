"""Reading an input from a drop folder refuses the same things whether the kernel resolves
the path in one call (``openat2``, Linux 5.6+) or the daemon walks it folder by folder
(older kernels, or a seccomp filter that refuses ``openat2``): a symlinked file, a file
inside a symlinked folder, a FIFO (without blocking on it), a folder. Each case is read
both ways, with the same message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon import safefs
from daemon.errors import InputError
from daemon.sources.folder.files import FolderFiles


@pytest.fixture(params=["openat2", "walk"])
def read_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "walk":
        monkeypatch.setattr(safefs, "_openat2", None)
    elif safefs._openat2 is None:
        pytest.skip("this kernel has no openat2")
    return str(request.param)


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    root = tmp_path / "drop"
    (root / "shoot").mkdir(parents=True)
    (root / "shoot" / "hero.png").write_bytes(b"\x89PNG hero")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    (root / "linked.png").symlink_to(outside / "secret.png")
    (root / "linked-folder").symlink_to(outside)
    os.mkfifo(root / "pipe.png")
    return root


def test_a_regular_file_is_read_whole(drop: Path, read_way: str) -> None:
    big = os.urandom(3 * (1 << 16) + 7)  # more than one read's worth
    (drop / "shoot" / "big.png").write_bytes(big)
    files = FolderFiles(str(drop))
    assert files.read("shoot/hero.png") == b"\x89PNG hero"
    assert files.read("shoot/big.png") == big


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("linked.png", "is a symlink; symlinks are not followed"),
        ("linked-folder/secret.png", "is inside a symlinked folder"),
        ("pipe.png", "is not a regular file"),
        ("shoot", "is a directory"),
        ("shoot/gone.png", "file vanished before it could be read"),
    ],
)
def test_what_is_refused_is_refused_both_ways(
    drop: Path, read_way: str, key: str, said: str
) -> None:
    with pytest.raises(InputError, match=said):
        FolderFiles(str(drop)).read(key)


def test_a_replaced_root_is_read_from_within_a_second(
    drop: Path, read_way: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root's descriptor is kept for a burst, not for good: a drop folder replaced by a
    new one (a remount, ``rm -rf drop && mkdir drop``) is read from once it is reopened."""
    clock = [1000.0]
    monkeypatch.setattr("daemon.sources.folder.files.time.monotonic", lambda: clock[0])
    files = FolderFiles(str(drop))
    assert files.read("shoot/hero.png") == b"\x89PNG hero"
    drop.rename(tmp_path / "old-drop")
    (drop / "shoot").mkdir(parents=True)
    (drop / "shoot" / "hero.png").write_bytes(b"new hero")
    clock[0] += 1.5
    assert files.read("shoot/hero.png") == b"new hero"
