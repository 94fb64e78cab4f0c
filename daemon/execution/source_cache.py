"""Each plan's source, read, hash-checked and decoded once, shared by its units and its finalizer.

A plan's source is needed by every unit that takes it (or its alpha channel, or its colour
profile), by the review sheet, the page's preview and the manifest's width and height. Read
each time, that was one GetObject per use on S3 (3 reads for a one-step rule, 5 for a
three-step chain, counting intake's). Here it is read once per plan while the plan is in
flight: the runner drops the entry when the plan is finalized, and at most ``capacity``
plans are held (least recently used out), so a backlog of big images never piles up in
memory — an evicted plan is simply read again.

Reads are not cached when they fail: the next use tries again and reports its own error.

The decode itself runs in a child process when the app gives the cache a decoder
(:class:`~daemon.execution.decoder.ProcessDecoder`), and comes back reduced to what the plan
needs: the main process never holds a near-limit image's full pixels.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Protocol

from daemon import faults
from daemon.errors import InputChanged, InputError, UploadInProgress
from daemon.execution.decoder import WORKING_SIDE, DecodedSource, decode_source
from daemon.rules.schema import parse_size
from daemon.sources.base import Source
from daemon.sources.uploads import looks_truncated
from daemon.types import Plan

__all__ = ["DecodedSource", "Decoder", "SourceCache", "decode_checked", "read_source"]


class Decoder(Protocol):
    """Where a source's bytes are decoded (:class:`~daemon.execution.decoder.ProcessDecoder`)."""

    def decode(
        self, data: bytes, name: str, *, animated: str = ..., working_side: int = ...
    ) -> DecodedSource: ...


class _InlineDecoder:
    """Decodes in this process (tests and tools that build a runner without the app)."""

    def decode(
        self,
        data: bytes,
        name: str,
        *,
        animated: str = "first_frame",
        working_side: int = WORKING_SIDE,
    ) -> DecodedSource:
        return decode_source(data, name, animated=animated, working_side=working_side)


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


def working_side(plan: Plan) -> int:
    """The longest side the plan's units may need of its source: the working size, or more
    when a step asks for a larger ``size`` or ``max_side``."""
    side = WORKING_SIDE
    for unit in plan.units:
        side = max(side, unit.max_side or 0)
        for wanted in (unit.params.get("width"), unit.params.get("height")):
            if isinstance(wanted, int):
                side = max(side, wanted)
        if unit.size:
            try:
                w, h = parse_size(unit.size)
            except ValueError:
                continue
            if isinstance(w, int) and isinstance(h, int):
                side = max(side, w, h)
    return side


def decode_checked(
    sources: Mapping[str, Source], plan: Plan, data: bytes, decoder: Decoder | None = None
) -> DecodedSource:
    """Decode the plan's source; when that fails, ask the source whether the file may still
    be arriving before the failure counts as the file's (:mod:`daemon.sources.uploads`):
    UploadInProgress while it may, InputChanged when a newer version replaced it, else the
    decode error itself (the input is quarantined)."""
    arrival = plan.arrival
    try:
        return (decoder or _InlineDecoder()).decode(
            data, arrival.key, animated=plan.animated, working_side=working_side(plan)
        )
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

    def __init__(
        self, sources: Mapping[str, Source], capacity: int = 8, decoder: Decoder | None = None
    ):
        self.sources = sources
        self.capacity = capacity
        self.decoder: Decoder = decoder or _InlineDecoder()
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
        decoded = decode_checked(self.sources, plan, data, self.decoder)
        faults.point("after-read")
        return decoded
