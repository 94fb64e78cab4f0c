"""A sink's decided outputs as a source: what rules started by a review decision read.

When a reviewer approves, rejects or refines a variant, :mod:`daemon.review.triggers` hands
intake an arrival from this source, named ``review:<sink>``, whose key is the variant's path
in that sink. Nothing is watched and nothing is ever moved or quarantined here: the variant
is another rule's output, not an upload.
"""

from __future__ import annotations

from daemon.errors import InputError
from daemon.sinks.base import Sink
from daemon.sources.base import Emit, Known, Source

__all__ = ["DecidedOutputs", "source_name_for"]

PREFIX = "review:"


def source_name_for(sink_name: str) -> str:
    return PREFIX + sink_name


class DecidedOutputs(Source):
    """Reads outputs back from ``sink`` for the plans a decision started."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.name = source_name_for(sink.name)

    def __repr__(self) -> str:
        return f"DecidedOutputs({self.sink.name!r})"

    def start(self, emit: Emit, known: Known) -> None:
        pass  # arrivals come from decisions, not from watching

    def scan(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self, key: str, etag: str | None = None) -> bytes:
        try:
            return self.sink.read(key)
        except FileNotFoundError:
            raise InputError(f"{self.sink.location(key)}: the decided output is gone") from None
