"""Value types that flow through the daemon: arrivals, plans, jobs, outputs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any


@dataclass(frozen=True)
class Arrival:
    """A complete input object, seen by a source and ready to be matched.

    ``key`` is the object's path relative to the source root with ``/`` separators
    (``shoots/may/a.jpg``); ``uri`` is where to read it (an absolute path, ``s3://...``).
    """

    source: str
    key: str
    uri: str
    size: int
    mtime_ns: int
    etag: str | None = None

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem


class JobState(enum.StrEnum):
    WAITING = "waiting"  # its input step has not finished yet
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


@dataclass
class Output:
    """One committed output file, as recorded in the ledger and the manifest."""

    path: str  # relative to the sink root
    step: str
    model: str  # profile name
    model_id: str
    variant: int
    seed: int
    width: int
    height: int
    sha256: str
    input: str | None = None  # the output path (or "source") this one was made from
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
