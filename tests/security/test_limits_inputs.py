"""Issue 15, bounded inputs: an input over ``limits.max_input_bytes`` is quarantined with the
reason before a byte of it is read, and the decode limit is one configurable number
(``limits.max_pixels``, 100 MP by default -- not Pillow's 89.5 MP)."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from daemon.errors import InputError
from daemon.outputs import imaging
from tests.conftest import make_image
from tests.reliability.conftest import harness  # noqa: F401 - the in-process App fixture


@pytest.fixture(autouse=True)
def default_decode_limit() -> Iterator[None]:
    """An App in this process sets the limit for the process: put the default back."""
    yield
    imaging.set_max_pixels(100_000_000)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def reads_recorded(reads: list[str]) -> Any:
    """A source factory for the harness: the real sources, the drop folder's reads recorded."""

    def factory(settings: Any) -> dict[str, Any]:
        from daemon.service.app import build_sources

        sources = build_sources(settings)
        drop = sources["drop"]
        read = drop.read

        def recording(key: str, etag: str | None = None) -> bytes:
            reads.append(key)
            return read(key, etag)

        drop.read = recording  # type: ignore[method-assign]
        return sources

    return factory


def test_an_oversize_input_is_quarantined_unread_with_the_reason(harness):  # noqa: F811
    harness.rule()
    big = harness.drop / "big.png"
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(big)  # ~120 kB
    assert big.stat().st_size > 50_000
    make_image(harness.drop / "small.png")
    reads: list[str] = []
    harness.start(extra="limits: {max_input_bytes: 50000}\n", source_factory=reads_recorded(reads))
    harness.wait(lambda: harness.settled("small.png") == "done", 60, "the small input")
    harness.wait(lambda: harness.ledger.quarantine(), 30, "the quarantine record")
    (row,) = harness.ledger.quarantine()
    assert row["key"] == "big.png"
    assert "50000-byte limit" in row["reason"] and "limits.max_input_bytes" in row["reason"]
    assert "big.png" not in reads, "the oversize input was read into memory"
    assert not big.exists()
    assert (harness.quarantine_dir / "big.png").exists(), "quarantined, not lost"
    assert not harness.ledger.plans("big.png"), "no job was made for it"


def test_the_decode_limit_is_the_configured_number(harness):  # noqa: F811
    harness.rule()
    make_image(harness.drop / "wide.png", size=(1100, 1000))  # 1.1 MP
    make_image(harness.drop / "fits.png", size=(1000, 1000))  # 1.0 MP
    harness.start(extra="limits: {max_pixels: 1000000}\n")
    harness.wait(
        lambda: harness.settled("wide.png") and harness.settled("fits.png"), 60, "both inputs"
    )
    assert harness.settled("fits.png") == "done"
    assert harness.settled("wide.png") == "failed"
    harness.wait(lambda: harness.ledger.quarantine(), 30, "the quarantine record")
    (row,) = harness.ledger.quarantine()
    assert "1 MP decode limit (limits.max_pixels)" in row["reason"], row["reason"]
    assert (harness.quarantine_dir / "wide.png").exists()


def test_the_default_decode_limit_is_100_megapixels_not_pillows():
    """A 95 MP header passes the limit (Pillow alone refuses it as a bomb above 89.5 MP);
    this one fails later, for its missing pixels, not for its size."""
    with pytest.raises(InputError) as caught:
        imaging.decode(png_declaring(9_500, 10_000), "big.png")
    assert "bomb" not in str(caught.value) and "limit" not in str(caught.value), caught.value
    with pytest.raises(InputError, match=r"100 MP decode limit \(limits.max_pixels\)"):
        imaging.decode(png_declaring(10_001, 10_000), "bigger.png")


def test_the_decode_limit_is_set_for_pillow_too():
    imaging.set_max_pixels(2_000_000)
    assert Image.MAX_IMAGE_PIXELS == 2_000_000
    with pytest.raises(InputError, match=r"2 MP decode limit"):
        imaging.decode(png_declaring(2_000, 1_001), "p.png")
