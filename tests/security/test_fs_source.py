"""Quarantine and on_success: move never follow what an uploader planted in the drop folder:
the daemon creates its quarantine and processed folders itself and refuses symlinked ones
(the input stays where it is, with a reason), and both can live outside the drop folder."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from daemon.config.settings import load_settings
from daemon.errors import ConfigError, EnvironmentFault
from daemon.sources.folder import FolderSource

RECORD = {"reason": "cannot decode", "sha256": None}


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    root = tmp_path / "drop"
    root.mkdir()
    return root


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A 0600 file the uploader cannot read, outside the drop folder."""
    path = tmp_path / "private" / "victim.key"
    path.parent.mkdir()
    path.write_text("the operator's secret")
    path.chmod(0o600)
    return path


def _untouched(victim: Path) -> None:
    assert victim.read_text() == "the operator's secret"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_symlinked_quarantine_is_refused_and_the_victim_untouched(drop, tmp_path, victim):
    """The issue's probe: drop/.quarantine -> a folder elsewhere, with bad.png.reason.json
    planted there as a symlink to a 0600 file."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(victim, elsewhere / "bad.png.reason.json")
    os.symlink(elsewhere, drop / ".quarantine")
    (drop / "bad.png").write_bytes(b"not an image")
    source = FolderSource("drop", drop)
    with pytest.raises(EnvironmentFault, match=r"\.quarantine is a symlink.*hint: remove"):
        source.quarantine("bad.png", RECORD, None)
    _untouched(victim)
    assert (drop / "bad.png").read_bytes() == b"not an image", "the input must stay in place"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["bad.png.reason.json"]


def test_a_symlink_planted_at_the_reason_name_is_replaced_not_followed(drop, victim):
    (drop / ".quarantine").mkdir()
    os.symlink(victim, drop / ".quarantine" / "bad.png.reason.json")
    (drop / "bad.png").write_bytes(b"not an image")
    where = FolderSource("drop", drop).quarantine("bad.png", RECORD, None)
    _untouched(victim)
    assert where == str(drop / ".quarantine" / "bad.png")
    reason = drop / ".quarantine" / "bad.png.reason.json"
    assert not reason.is_symlink()
    assert json.loads(reason.read_text())["reason"] == "cannot decode"


def test_a_symlinked_folder_inside_the_quarantine_is_refused(drop, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (drop / ".quarantine").mkdir()
    os.symlink(elsewhere, drop / ".quarantine" / "shoots")
    (drop / "shoots").mkdir()
    (drop / "shoots" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(EnvironmentFault, match="shoots is a symlink"):
        FolderSource("drop", drop).quarantine("shoots/bad.png", RECORD, None)
    assert list(elsewhere.iterdir()) == []
    assert (drop / "shoots" / "bad.png").exists()


def test_a_rules_symlinked_quarantine_folder_is_refused(drop, tmp_path):
    """``output.quarantine: failed`` (relative to the root) gets the same protection."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, drop / "failed")
    (drop / "bad.png").write_bytes(b"not an image")
    with pytest.raises(EnvironmentFault, match="failed is a symlink"):
        FolderSource("drop", drop).quarantine("bad.png", RECORD, "failed")
    assert list(elsewhere.iterdir()) == []


def test_symlinked_processed_folder_keeps_the_input_in_the_drop_folder(drop, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, drop / ".processed")
    (drop / "shoots").mkdir()
    (drop / "shoots" / "a.png").write_bytes(b"png")
    (drop / "shoots" / "a.txt").write_text("a prompt")
    with pytest.raises(EnvironmentFault, match=r"\.processed is a symlink"):
        FolderSource("drop", drop).move("shoots/a.png", ".processed/shoots/a.png")
    assert (drop / "shoots" / "a.png").read_bytes() == b"png"
    assert (drop / "shoots" / "a.txt").exists()
    assert list(elsewhere.iterdir()) == []


def test_processed_and_quarantine_folders_outside_the_drop_folder(drop, tmp_path):
    processed, quarantine = tmp_path / "var" / "processed", tmp_path / "var" / "quarantine"
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        "sources:\n  drop: {path: drop, quarantine: var/quarantine, processed: var/processed}\n"
    )
    source = FolderSource.from_config("drop", load_settings(config).sources["drop"])  # type: ignore[arg-type]
    (drop / "shoots").mkdir()
    (drop / "shoots" / "a.png").write_bytes(b"png")
    (drop / "shoots" / "a.txt").write_text("a prompt")
    (drop / "b.png").write_bytes(b"bad")
    assert source.move("shoots/a.png", ".processed/shoots/a.png")
    assert (processed / "shoots" / "a.png").read_bytes() == b"png"
    assert (processed / "shoots" / "a.txt").read_text() == "a prompt"
    assert source.quarantine("b.png", RECORD, None) == str(quarantine / "b.png")
    assert (quarantine / "b.png.reason.json").exists()
    assert not (drop / ".processed").exists() and not (drop / ".quarantine").exists()
    # Created by the daemon: never writable by anyone else, whatever the umask.
    for folder in (processed, processed / "shoots", quarantine):
        assert stat.S_IMODE(folder.stat().st_mode) & 0o022 == 0, oct(folder.stat().st_mode)


def test_the_source_creates_its_folders_at_start(drop):
    source = FolderSource("drop", drop, rescan_interval=60)
    source.start(lambda arrival: None, lambda *args, **kwargs: False)
    try:
        for name in (".quarantine", ".processed"):
            folder = drop / name
            assert folder.is_dir() and not folder.is_symlink()
            assert folder.stat().st_uid == os.geteuid()
    finally:
        source.stop()


def test_a_symlinked_quarantine_in_the_config_is_a_config_error(tmp_path):
    (tmp_path / "drop").mkdir()
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "q")
    config = tmp_path / "darkroom.yaml"
    config.write_text("sources:\n  drop: {path: drop, quarantine: q}\n")
    with pytest.raises(ConfigError, match="quarantine.*is a symlink"):
        load_settings(config)


def test_a_watched_quarantine_in_the_config_is_a_config_error(tmp_path):
    (tmp_path / "drop").mkdir()
    config = tmp_path / "darkroom.yaml"
    config.write_text("sources:\n  drop: {path: drop, processed: drop/done}\n")
    with pytest.raises(ConfigError, match="processed.*would be watched"):
        load_settings(config)
