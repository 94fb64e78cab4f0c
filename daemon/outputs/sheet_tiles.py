"""Sheet tiles kept from the moment an output is written.

The runner has every output's pixels in hand when it encodes and writes them; the review
sheet, made when the plan ends, would otherwise read each one back from the sink (an S3 GET
per output) and decode it. A tile-sized copy kept here spares both: the sheet of a plan with
dozens of variants decodes only what this process did not write (outputs committed before a
restart). Bounded: the least recently used tiles are dropped first (a tile is <= 256x256 RGB,
at most ~200 KB; 256 of them ~50 MB at worst).

    TILES.remember(sink.name, path, image)      # at commit
    TILES.get(sink.name, path)                  # the sheet's reader: a tile, or None
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from PIL import Image

from daemon.outputs.sheet import TILE
from daemon.outputs.thumbnails import fit_image

__all__ = ["TILES", "TileCache"]


class TileCache:
    """Tile-sized copies of written outputs by (sink, path); thread-safe, LRU-bounded."""

    def __init__(self, capacity: int = 256, tile: int = TILE) -> None:
        self.capacity = capacity
        self.tile = tile
        self._lock = threading.Lock()
        self._tiles: OrderedDict[tuple[str, str], Image.Image] = OrderedDict()

    def remember(
        self, sink: str, path: str, image: Image.Image, icc_profile: bytes | None = None
    ) -> None:
        """Keep a tile of ``image``, just written to ``path`` on ``sink`` (replacing an older
        one: a new round writes the same paths). An output written with a colour profile is
        not kept: read back, its tile is converted to sRGB through that profile."""
        if icc_profile:
            with self._lock:
                self._tiles.pop((sink, path), None)
            return
        small = fit_image(image, self.tile, upscale=False)
        with self._lock:
            self._tiles[(sink, path)] = small
            self._tiles.move_to_end((sink, path))
            while len(self._tiles) > self.capacity:
                self._tiles.popitem(last=False)

    def get(self, sink: str, path: str) -> Image.Image | None:
        with self._lock:
            tile = self._tiles.get((sink, path))
            if tile is not None:
                self._tiles.move_to_end((sink, path))
        return None if tile is None else tile.copy()  # callers may change theirs

    def __len__(self) -> int:
        with self._lock:
            return len(self._tiles)


TILES = TileCache()
