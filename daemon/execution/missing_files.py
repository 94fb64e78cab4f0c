"""Jobs held because a file they read is not there (yet): a mask. The record of what each
waits for, and the check that queues it again as soon as the file exists, rather than
after the hold's backoff (30 s doubling to 10 min).

A missing mask is an environment fault: the user can add it, so the job is held with the
path and the fix, its input stays where it is, and it resumes once the file is there. A
mask that is there but cannot be decoded is the input's fault (quarantined as usual).

Two kinds of waits:

- ``path``: a local file (a mask in the rules folder or a reference folder): the job
  resumes once ``path`` is a file.
- ``asset``: a photo's ``.mask.png`` next to it. Its arrival plans the photo again (the mask
  joins the content identity), so the held job is superseded by that newer plan: it is
  queued again once the newer plan exists, and then ends as superseded, never run twice.

The record lives in memory: after a restart a held job resumes on its backoff (or at once
on a reload or ``darkroom retry --held``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.queue.ledger import Ledger

__all__ = ["MissingFile", "MissingFiles", "newer_plan_exists"]


@dataclass(frozen=True)
class MissingFile:
    """What one held job waits for."""

    job_id: str
    plan_id: str
    path: Path | None = None  # a local file whose appearance resumes the job
    asset: tuple[str, str, str] | None = None  # (source, key, rule): a newer plan supersedes


class MissingFiles:
    """Held jobs by the file they wait for; safe to use from the runner and the scheduler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, MissingFile] = {}

    def note(self, missing: MissingFile) -> None:
        with self._lock:
            self._waiting[missing.job_id] = missing

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)

    def forget_unless(self, held: Callable[[str], bool]) -> None:
        """Forget the jobs that are no longer held (they ran after a backoff, or an operator
        cancelled them): only a held job may be queued again from here."""
        with self._lock:
            job_ids = list(self._waiting)
        gone = [job_id for job_id in job_ids if not held(job_id)]
        with self._lock:
            for job_id in gone:
                self._waiting.pop(job_id, None)

    def found(self, superseded: Callable[[MissingFile], bool]) -> list[str]:
        """The ids of the jobs whose file exists now, or whose plan a newer one replaced
        (``superseded`` asks the ledger); they are forgotten here."""
        with self._lock:
            waiting = list(self._waiting.values())
        ready = [m.job_id for m in waiting if _ready(m, superseded)]
        with self._lock:
            for job_id in ready:
                self._waiting.pop(job_id, None)
        return ready


def _ready(missing: MissingFile, superseded: Callable[[MissingFile], bool]) -> bool:
    if missing.path is not None:
        try:
            return missing.path.is_file()
        except OSError:  # an unmounted share: still missing
            return False
    return missing.asset is not None and superseded(missing)


def newer_plan_exists(ledger: Ledger, missing: MissingFile) -> bool:
    """Whether the asset has a plan of the same rule made after the held job's: the mask's
    arrival planned the photo again with it."""
    if missing.asset is None:
        return False
    source, key, rule = missing.asset
    plans = ledger.plans_of(source, key)
    ids = [p.id for p in plans]
    if missing.plan_id not in ids:  # pruned: nothing left to supersede
        return False
    later = plans[ids.index(missing.plan_id) + 1 :]  # oldest first
    return any(p.rule == rule for p in later)
