"""Each plan's source, read, hash-checked and decoded once, shared by its units and its finalizer.

A plan's source is needed by every unit that takes it (or its alpha channel, or its colour
profile), by the review sheet, the page's preview and the manifest's width and height. Read
each time, that was one GetObject per use on S3 (3 reads for a one-step rule, 5 for a
three-step chain, counting intake's). Here it is read once per plan while the plan is in
flight: the runner drops the entry when the plan is finalized, and at most ``capacity``
plans are held (least recently used out), so a backlog of big images never piles up in
memory — an evicted plan is simply read again.

Reads are not cached when they fail: the next use tries again and reports its own error.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from daemon import faults
from daemon.errors import InputChanged, InputError, UploadInProgress
from daemon.outputs import imaging
from daemon.sources.base import Source
from daemon.sources.uploads import looks_truncated
from daemon.types import Plan

__all__ = ["DecodedSource", "SourceCache", "decode_checked", "read_source"]


@dataclass(frozen=True)
class DecodedSource:
    """A plan's source image. Shared between threads: use it, never modify it in place."""

    image: Image.Image  # as decoded: its mode, alpha and colour profile intact
    rgb: Image.Image  # upright RGB: what models and the sheet see
    icc: bytes | None  # the colour profile the outputs carry


def read_source(sources: Mapping[str, Source], plan: Plan) -> bytes:
    """The plan's source bytes, checked against the hash the plan was made for."""
    arrival = plan.arrival
    source = sources.get(arrival.source)
    if source is None:
        raise InputError(f"source {arrival.source!r} is no longer configured")
    data = source.read(arrival.key, arrival.etag)
    if hashlib.sha256(data).hexdigest() != plan.sha256:
        raise InputChanged(
            f"{arrival.key} changed since it arrived; the new version is processed on its own"
        )
    return data


def decode_checked(sources: Mapping[str, Source], plan: Plan, data: bytes) -> Image.Image:
    """Decode the plan's source; when that fails, ask the source whether the file may still
    be arriving before the failure counts as the file's (:mod:`daemon.sources.uploads`):
    UploadInProgress while it may, InputChanged when a newer version replaced it, else the
    decode error itself (the input is quarantined)."""
    arrival = plan.arrival
    try:
        return imaging.decode(data, arrival.key, animated=plan.animated)
    except InputError as exc:
        source = sources.get(arrival.source)
        if source is None:
            raise
        truncated = looks_truncated(data, str(exc))
        verdict = source.upload_verdict(arrival.key, plan.sha256, truncated=truncated)
        if verdict.state == "settled":
            raise
        if verdict.state == "changed":
            raise InputChanged(
                f"{arrival.key} changed after it failed to decode ({exc}); it was an upload"
                " in progress, and the new version is processed on its own"
            ) from None
        looks = "looks like an upload in progress" if truncated else "checking the upload ended"
        raise UploadInProgress(
            f"waiting: {looks} ({exc}); quarantined only if it stays unchanged",
            retry_in=verdict.retry_in,
        ) from None


class SourceCache:
    """The decoded sources of the plans in flight, by plan id, at most ``capacity`` of them."""

    def __init__(self, sources: Mapping[str, Source], capacity: int = 8):
        self.sources = sources
        self.capacity = capacity
        self._entries: OrderedDict[str, DecodedSource] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # one read per plan, even when raced
        self.reads = 0  # source reads, for tests and benchmarks

    def get(self, plan_id: str, plan: Plan) -> DecodedSource:
        """The plan's decoded source: from the cache, else read, checked and decoded now."""
        with self._lock:
            entry = self._entries.get(plan_id)
            if entry is not None:
                self._entries.move_to_end(plan_id)
                return entry
            loading = self._loading.setdefault(plan_id, threading.Lock())
        with loading:
            with self._lock:
                entry = self._entries.get(plan_id)
            if entry is not None:
                return entry
            try:
                entry = self._decode(plan)
            except BaseException:
                with self._lock:
                    self._loading.pop(plan_id, None)
                raise
            with self._lock:
                self._entries[plan_id] = entry
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
                self._loading.pop(plan_id, None)
        return entry

    def drop(self, plan_id: str) -> None:
        """Forget the plan's source (it is finalized)."""
        with self._lock:
            self._entries.pop(plan_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _decode(self, plan: Plan) -> DecodedSource:
        data = read_source(self.sources, plan)
        with self._lock:
            self.reads += 1
        image = decode_checked(self.sources, plan, data)
        faults.point("after-read")
        icc = imaging.output_icc(image, plan.arrival.key)
        return DecodedSource(image=image, rgb=imaging.to_rgb(image), icc=icc)
