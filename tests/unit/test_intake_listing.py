"""Issue 16: a burst of images in a watched folder costs one folder listing, not a read
attempt for each sidecar name each image might have (four per image, nearly all missing).

The listing is short-lived and a sidecar that arrives drops it, so a sidecar written after
its folder was listed is still taken: its own arrival re-plans the image.
"""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

from PIL import Image

from daemon.intake.intake import Intake
from daemon.queue.ledger import Ledger
from daemon.rules.load import load_rules
from daemon.sources.folder import FolderSource
from daemon.types import Arrival
from tests.conftest import STUB_RULE


class CountingFolder(FolderSource):
    """The folder source, counting what intake reads and lists (the seam: the Source API)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[str] = []
        self.listings: list[str] = []

    def read(self, key: str, etag: str | None = None) -> bytes:
        self.reads.append(key)
        return super().read(key, etag)

    def folder_names(self, folder: str) -> frozenset[str] | None:
        self.listings.append(folder)
        return super().folder_names(folder)


def png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (i % 256, 9, 9)).save(buffer, "PNG")
    return buffer.getvalue()


def make(tmp_path: Path) -> tuple[Intake, CountingFolder, Ledger, Path]:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "r.yaml").write_text(textwrap.dedent(STUB_RULE))
    rules = load_rules(rules_dir)
    drop = tmp_path / "drop"
    (drop / "shoot").mkdir(parents=True)
    source = CountingFolder("drop", drop)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    intake = Intake(ledger, lambda: rules, {"drop": source}, lambda: None, rules_dir=rules_dir)
    return intake, source, ledger, drop


def arrival(drop: Path, key: str) -> Arrival:
    path = drop / key
    st = os.stat(path)
    return Arrival("drop", key, str(path), st.st_size, st.st_mtime_ns)


def test_a_burst_lists_its_folder_instead_of_probing_every_sidecar_name(tmp_path):
    intake, source, ledger, drop = make(tmp_path)
    keys = [f"shoot/img{i:03d}.png" for i in range(60)]
    for i, key in enumerate(keys):
        (drop / key).write_bytes(png(i))
    (drop / "shoot/img007.txt").write_text("a red bicycle")
    results = intake.handle_many([arrival(drop, key) for key in keys])
    assert all(len(r or []) == 1 for r in results)
    # Each image read once, and the one sidecar that exists; no name that is not there.
    assert sorted(source.reads) == sorted([*keys, "shoot/img007.txt"])
    assert source.listings == ["shoot"]
    with_sidecar = ledger.plan(results[7][0]).plan  # type: ignore[index]
    assert with_sidecar.sidecar is not None and with_sidecar.sidecar.key == "shoot/img007.txt"
    assert ledger.plan(results[8][0]).plan.sidecar is None  # type: ignore[index]


def test_a_sidecar_written_after_the_listing_re_plans_its_image_when_it_arrives(tmp_path):
    intake, source, ledger, drop = make(tmp_path)
    (drop / "shoot/a.png").write_bytes(png(1))
    first = intake.handle(arrival(drop, "shoot/a.png"))
    assert first is not None and ledger.plan(first[0]).plan.sidecar is None
    (drop / "shoot/a.txt").write_text("a blue kettle")  # the listing above does not have it
    again = intake.handle(arrival(drop, "shoot/a.txt"))
    assert again is not None and len(again) == 1 and again != first
    replanned = ledger.plan(again[0]).plan
    assert replanned.sidecar is not None and replanned.sidecar.key == "shoot/a.txt"
    assert replanned.prompt == "a blue kettle"


def test_a_folder_that_cannot_be_listed_is_probed_name_by_name(tmp_path, monkeypatch):
    intake, source, ledger, drop = make(tmp_path)
    (drop / "shoot/b.png").write_bytes(png(2))
    (drop / "shoot/b.json").write_text('{"prompt": "a green chair"}')
    monkeypatch.setattr(FolderSource, "folder_names", lambda self, folder: None)
    result = intake.handle(arrival(drop, "shoot/b.png"))
    assert result is not None
    assert ledger.plan(result[0]).plan.prompt == "a green chair"
