"""The ledger's SQLite file: one write connection behind a re-entrant lock with its
transactions and batches, a separate reader connection, the clock, and the retry settings
every part of the ledger shares.

One connection guarded by a lock serves the daemon's threads; other processes (the
operator CLI) open their own connections, which WAL lets read while the daemon writes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon.queue.schema import migrate

__all__ = ["Store"]


class Store:
    """The connections, lock and settings the ledger's parts (plans, jobs, ...) share."""

    def __init__(
        self,
        path: Path,
        *,
        max_attempts: int = 3,
        retry_backoff: float = 2.0,
        clock: Callable[[], float] = time.time,
        hold_backoff: float = 30.0,
        hold_backoff_max: float = 600.0,
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Read at each use, not copied: a config reload changes them on a running ledger.
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.hold_backoff = hold_backoff
        self.hold_backoff_max = hold_backoff_max
        self.clock = clock
        self.lock = threading.RLock()
        self._batch_savepoints = 0  # names the savepoints of writes inside a batch
        self._all_or_nothing = False  # inside batch(savepoints=False): no savepoint per write
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a committed 'done' survives power loss
        self.db.execute("PRAGMA foreign_keys=ON")
        migrate(self.db)
        # The sources' "handled already?" question (every file of every rescan) goes to its
        # own connection: WAL lets it read while a group of writes commits (an fsync), so
        # the folder gate does not queue up behind intake's writes for the ledger's lock.
        self.reader = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self.reader_lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.db.close()
        with self.reader_lock:
            self.reader.close()

    @contextmanager
    def tx(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; inside :meth:`batch` (same thread, the lock is re-entrant) a
        savepoint of the batch's transaction, so one failing write undoes only itself.
        ``durable=False``: the commit is not fsync'd (see :meth:`batch`)."""
        if not durable:
            with self.lock:
                if self.db.in_transaction:  # inside a durable batch: it decides
                    with self.tx() as db:
                        yield db
                    return
                self.db.execute("PRAGMA synchronous=NORMAL")
                try:
                    with self.tx() as db:
                        yield db
                finally:
                    self.db.execute("PRAGMA synchronous=FULL")
            return
        with self.lock:
            if self.db.in_transaction and self._all_or_nothing:
                yield self.db  # a failure undoes the whole batch (batch(savepoints=False))
                return
            if self.db.in_transaction:
                self._batch_savepoints += 1
                name = f"sp{self._batch_savepoints}"
                self.db.execute(f"SAVEPOINT {name}")
                try:
                    yield self.db
                except BaseException:
                    self.db.execute(f"ROLLBACK TO {name}")
                    self.db.execute(f"RELEASE {name}")
                    raise
                self.db.execute(f"RELEASE {name}")
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    @contextmanager
    def batch(self, *, durable: bool = True, savepoints: bool = True) -> Iterator[None]:
        """Group many writes (``submit``, ``mark_seen``, ...) into one transaction: one
        commit (one fsync) for all of them instead of one each. Intake writes a burst of
        arrivals this way. Holds the ledger's lock for its duration, so keep it to writes:
        read files and build plans before entering it.

        ``durable=False`` skips the commit's fsync (WAL, ``synchronous=NORMAL``): a crash of
        the process loses nothing, a power loss may lose this batch and no later durable
        commit (the WAL is written in order, and the next durable commit's fsync covers it).
        For writes that are found again after such a loss: intake's plans and ``seen`` rows
        (the startup scan, the S3 listing or the unacknowledged queue message brings the
        files back, and submit is idempotent).

        ``savepoints=False``: the writes inside take no savepoint each (two statements
        apiece, six per intake arrival); any failure undoes the whole batch. For a caller that
        retries the group with savepoints when that happens (intake)."""
        if savepoints:
            with self.tx(durable):
                yield
            return
        with self.lock:
            outer = self._all_or_nothing
            self._all_or_nothing = not self.db.in_transaction or outer
            try:
                with self.tx(durable):
                    yield
            finally:
                self._all_or_nothing = outer
