"""Intake: each arrival read once, facts from the header only, typed plans submitted."""

from __future__ import annotations

import contextlib
import io
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFile

from daemon.intake.facts import image_facts
from daemon.intake.intake import Intake
from daemon.queue.arrivals import SeenVersion
from daemon.rules.load import load_rules
from daemon.sources.memory import MemorySource
from daemon.types import Arrival, Plan

RULE = """\
name: r
match:
  source: mem
  include: ["**/*.jpg", "**/*.png"]
  min_width: 16
prompt: "{stem}"
steps:
  - name: s
    model: tiny
output:
  sink: out
"""


def encoded(fmt: str, size: tuple[int, int] = (40, 20), **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, fmt, **save)
    return buffer.getvalue()


def rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: upright it is taller than wide
    return exif


@pytest.fixture
def no_decoding(monkeypatch):
    def refuse(self):
        raise AssertionError("image_facts decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize(
    "data, expected",
    [
        (encoded("JPEG"), ("jpeg", 40, 20)),
        (encoded("JPEG", exif=rotated_exif()), ("jpeg", 20, 40)),
        (encoded("PNG"), ("png", 40, 20)),  # Pillow's PNG getexif would load() here
        (encoded("PNG", exif=rotated_exif()), ("png", 20, 40)),
        (encoded("WEBP"), ("webp", 40, 20)),
        (encoded("GIF"), ("gif", 40, 20)),
        (encoded("TIFF"), ("tiff", 40, 20)),
        (encoded("BMP"), ("bmp", 40, 20)),
    ],
)
def test_image_facts_come_from_the_header_without_decoding(no_decoding, data, expected):
    facts = image_facts(data)
    assert facts is not None
    assert (facts.type, facts.width, facts.height) == expected


def test_image_facts_of_what_is_not_an_image_are_none():
    assert image_facts(b"not an image") is None


class CountingSource(MemorySource):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads: list[str] = []

    def read(self, key: str, etag: str | None = None) -> bytes:
        self.reads.append(key)
        return super().read(key, etag)


class FakeLedger:
    """The ledger's seam, as intake uses it."""

    def __init__(self) -> None:
        self.plans: list[Plan] = []
        self.seen: dict[str, str] = {}

    def submit(self, plan: Plan) -> tuple[str, bool]:
        created = plan not in self.plans
        self.plans.append(plan)
        return f"p{len(self.plans)}", created

    def submit_group(self, plans: list[Plan]) -> list[tuple[str, bool]]:
        return [self.submit(plan) for plan in plans]

    def mark_seen_many(self, rows: list[SeenVersion]) -> None:
        for row in rows:
            self.seen[row.key] = row.outcome

    @contextlib.contextmanager
    def batch(self, durable: bool = True, savepoints: bool = True) -> Iterator[None]:
        yield

    def is_seen(self, *args: Any) -> bool:
        return False

    def record_quarantine(self, *args: Any) -> None:
        raise AssertionError("nothing here is unreadable")


def make_intake(tmp_path: Path) -> tuple[Intake, CountingSource, FakeLedger]:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "r.yaml").write_text(textwrap.dedent(RULE))
    rules = load_rules(rules_dir)
    source, ledger = CountingSource("mem"), FakeLedger()
    intake = Intake(ledger, lambda: rules, {"mem": source}, lambda: None, rules_dir=rules_dir)
    return intake, source, ledger


def arrival_of(source: MemorySource, key: str, data: bytes) -> Arrival:
    return source.put(key, data)


def test_an_arrival_is_read_once_and_becomes_one_typed_plan(tmp_path):
    intake, source, ledger = make_intake(tmp_path)
    arrival = arrival_of(source, "shoot/a.jpg", encoded("JPEG"))
    assert intake.handle(arrival) == ["p1"]
    image_reads = [key for key in source.reads if key == "shoot/a.jpg"]
    assert image_reads == ["shoot/a.jpg"]
    assert set(source.reads) - {"shoot/a.jpg"} == {
        "shoot/a.txt",
        "shoot/a.json",
        "shoot/a.yaml",
        "shoot/a.yml",
    }  # looking for a sidecar; no rule masks, so no mask is read
    [plan] = ledger.plans
    assert isinstance(plan, Plan) and plan.units[0].prompt == "a"
    assert ledger.seen["shoot/a.jpg"] == "submitted"


def test_a_file_no_rule_takes_by_name_is_not_read(tmp_path):
    intake, source, ledger = make_intake(tmp_path)
    arrival = arrival_of(source, "notes.pdf", b"%PDF")
    assert intake.handle(arrival) == []
    assert source.reads == [] and ledger.plans == []
    assert ledger.seen["notes.pdf"].startswith(
        "ignored: no rule matches (r: notes.pdf matches none"
    )


def test_a_small_image_is_ignored_after_one_read(tmp_path):
    intake, source, ledger = make_intake(tmp_path)
    arrival = arrival_of(source, "tiny.png", encoded("PNG", size=(8, 8)))
    assert intake.handle(arrival) == []
    assert source.reads.count("tiny.png") == 1 and ledger.plans == []


def test_a_sidecar_arriving_replans_its_image_reading_it_once(tmp_path):
    intake, source, ledger = make_intake(tmp_path)
    arrival_of(source, "a.png", encoded("PNG"))
    sidecar = arrival_of(source, "a.txt", b"a red chair")
    assert intake.handle(sidecar) == ["p1"]
    assert source.reads.count("a.png") == 1
    [plan] = ledger.plans
    assert plan.units[0].prompt == "a red chair"
    assert plan.sidecar is not None and plan.sidecar.key == "a.txt"
    assert ledger.seen["a.txt"] == "sidecar"
