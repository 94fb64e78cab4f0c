"""The ledger: a SQLite database (WAL) that is also the job queue.

Tables:

- ``plans``: one row per (asset, content, rule, rule digest), where the asset is (source,
  key): what an arrival is to become. Its id is derived from those, so submitting the same
  file for the same rule twice — a duplicate event, a rescan, a restart — is a no-op, while
  the same bytes at another path are a plan of their own.
- ``owners``: which asset owns each output folder of each sink
  (:mod:`daemon.outputs.placement`). A plan whose folder belongs to another asset is placed
  beside it at submission; nothing ever writes into another asset's folder.
- ``jobs``: one row per unit of a plan (one model run; its columns keep the old name
  ``step``). A unit that takes an earlier rule step's outputs waits (``waiting``) until
  every unit of that step has ended. ``claim`` moves a queued job to ``running`` and
  counts the attempt; ``complete`` records the committed outputs; ``fail`` either
  schedules a retry with exponential backoff or ends the job with its reason.
- ``seen``: the last (size, mtime) handled per source key, so rescans skip known files
  without reading them.

A plan is ``done`` only after its manifest (the commit marker) has been written; on
start, ``recover`` requeues work that was running when the process died and returns
plans whose jobs all ended but whose manifest was never written.

One connection guarded by a lock serves the daemon's threads; other processes (the
operator CLI) open their own connections, which WAL lets read while the daemon writes.

Typed at the seam: plans go in and come out as :class:`daemon.types.Plan` (stored as its
JSON), outputs as :class:`daemon.types.OutputRecord`, rounds as
:class:`daemon.outputs.manifest.RoundSummary`; the rows are :mod:`daemon.queue.rows`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from daemon.errors import OutputError
from daemon.outputs import placement
from daemon.outputs.manifest import RoundSummary
from daemon.queue.rows import Candidate, JobRow, PlanRow
from daemon.types import JobState, OutputRecord, Plan, PlanState

log = structlog.get_logger("darkroom.ledger")

__all__ = ["Candidate", "JobRow", "Ledger", "PlanRow", "job_id", "plan_id"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    rule TEXT NOT NULL,
    rule_digest TEXT NOT NULL,
    plan TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'active',
    rounds TEXT,                 -- earlier rounds of this source and rule, kept by the runner
    prior_manifest TEXT,         -- the manifest this plan's round replaces: its version token
                                 -- ('absent': none), read when the previous round was archived
    reruns INTEGER NOT NULL DEFAULT 0,         -- operator re-runs after a manifest was committed
    reruns_archived INTEGER NOT NULL DEFAULT 0, -- of those, how many had their round archived
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL REFERENCES plans(id),
    step TEXT NOT NULL,          -- the unit's id: "explore", or "explore:sd-turbo" in a compare step
    step_name TEXT NOT NULL,     -- the unit's rule step name
    step_index INTEGER NOT NULL, -- the unit's index in the plan
    depends_on TEXT,             -- the rule step whose units must all end first (NULL: the source)
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    on_worker_at REAL,           -- when this claim's processing began (NULL: only claimed)
    holds INTEGER NOT NULL DEFAULT 0, -- environment-fault holds in a row (the backoff's exponent)
    error TEXT,
    outputs TEXT,
    seconds REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS owners (
    sink TEXT NOT NULL,
    folder TEXT NOT NULL,        -- daemon.outputs.placement.owned_folder of a manifest path
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (sink, folder)
);
CREATE TABLE IF NOT EXISTS quarantine (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    reason TEXT NOT NULL,
    location TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (source, key, sha256)
);
CREATE INDEX IF NOT EXISTS plans_source ON plans(source, key, sha256);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, not_before, created_at);
CREATE INDEX IF NOT EXISTS jobs_plan ON jobs(plan_id);
CREATE TABLE IF NOT EXISTS seen (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    etag TEXT,
    sha256 TEXT,
    outcome TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (source, key)
);
"""


# prior_manifest's value when the plan's folder held no manifest (an ETag is never this).
ABSENT = "absent"

# Columns added after a table was first created: (table, column, declaration). Ledgers
# written by an earlier version get them at open; CREATE TABLE above already has them.
ADDED_COLUMNS: list[tuple[str, str, str]] = [
    ("plans", "prior_manifest", "TEXT"),
    ("jobs", "on_worker_at", "REAL"),
    ("jobs", "holds", "INTEGER NOT NULL DEFAULT 0"),
    ("plans", "reruns", "INTEGER NOT NULL DEFAULT 0"),
    ("plans", "reruns_archived", "INTEGER NOT NULL DEFAULT 0"),
]


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, column, declaration in ADDED_COLUMNS:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def _record_earlier_owners(db: sqlite3.Connection) -> None:
    """A ledger written before output ownership existed: each folder its plans wrote belongs
    to the first asset that wrote it, so no later asset is placed over it."""
    if db.execute("SELECT 1 FROM owners LIMIT 1").fetchone():
        return
    rows = db.execute(
        "SELECT source, key, created_at, json_extract(plan, '$.sink') AS sink,"
        " json_extract(plan, '$.manifest') AS manifest FROM plans ORDER BY created_at"
    ).fetchall()
    for row in rows:
        if row[3] and row[4]:
            db.execute(
                "INSERT OR IGNORE INTO owners (sink, folder, source, key, at) VALUES (?, ?, ?, ?, ?)",
                (row[3], placement.owned_folder(row[4]), row[0], row[1], row[2]),
            )


def plan_id(content: str, rule: str, digest: str, source: str, key: str) -> str:
    """A plan's id: the asset (source, key), its content, the rule and the rule's digest. The
    same bytes at another path are another asset, so they get a plan (and outputs) of their own."""
    asset = f"{source}\0{key}"
    return hashlib.sha256(f"{content}\0{rule}\0{digest}\0{asset}".encode()).hexdigest()[:24]


def legacy_plan_id(content: str, rule: str, digest: str) -> str:
    """The id ledgers written before 0.x gave a plan (no asset in it): still recognised, so an
    unchanged file is not run again after an upgrade."""
    return hashlib.sha256(f"{content}\0{rule}\0{digest}".encode()).hexdigest()[:24]


def _moved_away(location: str | None) -> bool:
    """Whether a quarantine moved the file off its key: a local path (folder sources).
    S3 and memory sources leave the object in place and give a URL for the reason record."""
    return location is not None and "://" not in location


def job_id(plan: str, unit_id: str) -> str:
    return hashlib.sha256(f"{plan}\0{unit_id}".encode()).hexdigest()[:24]


class Ledger:
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
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.hold_backoff = hold_backoff
        self.hold_backoff_max = hold_backoff_max
        self._clock = clock
        self._lock = threading.RLock()
        self._batch_savepoints = 0  # names the savepoints of writes inside a batch
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed 'done' survives power loss
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        _add_missing_columns(self._db)
        _record_earlier_owners(self._db)
        # The sources' "handled already?" question (every file of every rescan) goes to its
        # own connection: WAL lets it read while a group of writes commits (an fsync), so
        # the folder gate does not queue up behind intake's writes for the ledger's lock.
        self._reader = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._reader_lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._reader_lock:
            self._reader.close()

    @contextmanager
    def _tx(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; inside :meth:`batch` (same thread, the lock is re-entrant) a
        savepoint of the batch's transaction, so one failing write undoes only itself.
        ``durable=False``: the commit is not fsync'd (see :meth:`batch`)."""
        if not durable:
            with self._lock:
                if self._db.in_transaction:  # inside a durable batch: it decides
                    with self._tx() as db:
                        yield db
                    return
                self._db.execute("PRAGMA synchronous=NORMAL")
                try:
                    with self._tx() as db:
                        yield db
                finally:
                    self._db.execute("PRAGMA synchronous=FULL")
            return
        with self._lock:
            if self._db.in_transaction:
                self._batch_savepoints += 1
                name = f"sp{self._batch_savepoints}"
                self._db.execute(f"SAVEPOINT {name}")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute(f"ROLLBACK TO {name}")
                    self._db.execute(f"RELEASE {name}")
                    raise
                self._db.execute(f"RELEASE {name}")
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def batch(self, *, durable: bool = True) -> Iterator[None]:
        """Group many writes (``submit``, ``mark_seen``, ...) into one transaction: one
        commit (one fsync) for all of them instead of one each. Intake writes a burst of
        arrivals this way. Holds the ledger's lock for its duration, so keep it to writes:
        read files and build plans before entering it.

        ``durable=False`` skips the commit's fsync (WAL, ``synchronous=NORMAL``): a crash of
        the process loses nothing, a power loss may lose this batch and no later durable
        commit (the WAL is written in order, and the next durable commit's fsync covers it).
        For writes that are found again after such a loss: intake's plans and ``seen`` rows
        (the startup scan, the S3 listing or the unacknowledged queue message brings the
        files back, and submit is idempotent)."""
        with self._tx(durable):
            yield

    def submit_many(self, plans: list[Plan]) -> list[tuple[str, bool] | Exception]:
        """``submit`` for each plan in one transaction; per plan its (id, created), or the
        exception that plan raised (that plan alone is left out, the others are kept)."""
        results: list[tuple[str, bool] | Exception] = []
        with self.batch():
            for plan in plans:
                try:
                    results.append(self.submit(plan))
                except Exception as exc:  # sqlite3 or a plan that cannot be stored
                    results.append(exc)
        return results

    def plan_states(self, ids: list[str]) -> dict[str, PlanState]:
        """The state of each of these plans that the ledger has, in one query."""
        states: dict[str, PlanState] = {}
        with self._lock:
            for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT id, state FROM plans WHERE id IN ({marks})", chunk
                ).fetchall()
                states.update({r["id"]: PlanState(r["state"]) for r in rows})
        return states

    # -- intake ----------------------------------------------------------------------

    def submit(self, plan: Plan) -> tuple[str, bool]:
        """Record a plan and its jobs (one per unit); returns (plan id, created). Idempotent:
        the id is the asset (source, key) + content (image bytes + sidecar + mask) + rule +
        rule digest; a job's adds its unit id. A new plan is placed in an output folder its
        asset owns (:meth:`_place`): the stored plan may differ from ``plan`` there."""
        source, key = plan.arrival.source, plan.arrival.key
        pid = plan_id(plan.content, plan.rule, plan.digest, source, key)
        now = self._clock()
        with self._tx() as db:
            known = self._known_plan(db, pid, plan)
            if known is not None:
                return known, self._readmit_moved_back(db, known, plan, now)
            plan = self._place(db, plan, now)
            cur = db.execute(
                "INSERT OR IGNORE INTO plans"
                " (id, source, key, sha256, rule, rule_digest, plan, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pid,
                    plan.arrival.source,
                    plan.arrival.key,
                    plan.sha256,
                    plan.rule,
                    plan.digest,
                    plan.model_dump_json(),
                    now,
                ),
            )
            if cur.rowcount == 0:
                return pid, False
            for index, unit in enumerate(plan.units):
                depends = None if unit.input == "source" else unit.input
                state = JobState.QUEUED if depends is None else JobState.WAITING
                if plan.error:  # the plan cannot run as written (e.g. an unknown variable)
                    state = JobState.FAILED
                db.execute(
                    "INSERT INTO jobs (id, plan_id, step, step_name, step_index, depends_on,"
                    " rule, state, error, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id(pid, unit.id),
                        pid,
                        unit.id,
                        unit.name,
                        index,
                        depends,
                        plan.rule,
                        state,
                        plan.error,
                        now,
                        now,
                    ),
                )
        return pid, True

    def _readmit_moved_back(self, db: sqlite3.Connection, pid: str, plan: Plan, now: float) -> bool:
        """The file is back at its key after a quarantine moved it away: an operator moved
        it back to have it processed again, so its failed plan runs again (a new round)."""
        source, key = plan.arrival.source, plan.arrival.key
        moved_back = db.execute(
            "SELECT 1 FROM quarantine WHERE source=? AND key=? AND sha256=?"
            " AND location IS NOT NULL AND location NOT LIKE '%://%'",
            (source, key, plan.sha256),
        ).fetchone()
        if not moved_back or not self._readmit(db, pid, now):
            return False
        db.execute(
            "DELETE FROM quarantine WHERE source=? AND key=? AND sha256=?",
            (source, key, plan.sha256),
        )
        return True

    def _known_plan(self, db: sqlite3.Connection, pid: str, plan: Plan) -> str | None:
        """The id under which this very plan is already recorded: ``pid``, or the id an older
        ledger gave it (content + rule + digest) when that row is for the same asset."""
        if db.execute("SELECT 1 FROM plans WHERE id=?", (pid,)).fetchone():
            return pid
        legacy = legacy_plan_id(plan.content, plan.rule, plan.digest)
        row = db.execute(
            "SELECT 1 FROM plans WHERE id=? AND source=? AND key=?",
            (legacy, plan.arrival.source, plan.arrival.key),
        ).fetchone()
        return legacy if row else None

    def _place(self, db: sqlite3.Connection, plan: Plan, now: float) -> Plan:
        """Record the asset as the owner of the output folder its plan asks for, or — when
        another asset owns it — place the plan in a deterministic alternative beside it."""
        source, key = plan.arrival.source, plan.arrival.key
        target = placement.owned_folder(plan.manifest)
        owner = (source, key)
        for attempt in range(100):
            row = db.execute(
                "SELECT source, key FROM owners WHERE sink=? AND folder=?", (plan.sink, target)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO owners (sink, folder, source, key, at) VALUES (?, ?, ?, ?, ?)",
                    (plan.sink, target, source, key, now),
                )
                break
            if (row["source"], row["key"]) == (source, key):
                break
            if attempt == 0:
                owner = (row["source"], row["key"])
            target = placement.alternative(plan.manifest, source, key, attempt)
        else:  # pragma: no cover - takes 100 hash collisions
            raise OutputError(f"no free output folder next to {plan.manifest} for {source}:{key}")
        if target == placement.owned_folder(plan.manifest):
            return plan
        placed = placement.place(plan, target, owner)
        log.warning(
            "output folder belongs to another input; placed beside it",
            source=source,
            key=key,
            requested=placed.placed.requested if placed.placed else None,
            folder=target,
        )
        return placed

    def owner_of(self, sink: str, folder: str) -> tuple[str, str] | None:
        """The asset (source, key) that owns ``folder`` of ``sink``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT source, key FROM owners WHERE sink=? AND folder=?", (sink, folder)
            ).fetchone()
        return (row["source"], row["key"]) if row else None

    def is_seen(
        self, source: str, key: str, size: int, mtime_ns: int, etag: str | None = None
    ) -> bool:
        """Whether this version of the object was handled: by ETag where the source has
        one (S3), else by size and modification time (folders). Reads what is committed."""
        with self._reader_lock:
            if etag:
                row = self._reader.execute(
                    "SELECT 1 FROM seen WHERE source=? AND key=? AND size=? AND etag=?",
                    (source, key, size, etag),
                ).fetchone()
            else:
                row = self._reader.execute(
                    "SELECT 1 FROM seen WHERE source=? AND key=? AND size=? AND mtime_ns=?",
                    (source, key, size, mtime_ns),
                ).fetchone()
        return row is not None

    def mark_seen(
        self,
        source: str,
        key: str,
        size: int,
        mtime_ns: int,
        sha256: str | None,
        outcome: str,
        etag: str | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO seen (source, key, size, mtime_ns, etag, sha256, outcome, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (source, key, size, mtime_ns, etag, sha256, outcome, self._clock()),
            )

    # -- the queue -------------------------------------------------------------------

    def claim(self, owner: str) -> JobRow | None:
        """The next runnable job, now ``running`` with its attempt counted; None if none."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state=? AND not_before<=? ORDER BY not_before, created_at, step_index LIMIT 1",
                (JobState.QUEUED, now),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state=?, attempts=attempts+1, lease_owner=?, on_worker_at=NULL,"
                " updated_at=? WHERE id=?",
                (JobState.RUNNING, owner, now, row["id"]),
            )
            return JobRow.from_row(
                db.execute("SELECT * FROM jobs WHERE id=?", (row["id"],)).fetchone()
            )

    # The first ``per_rule`` due jobs of every rule, with the profile each would load
    # (daemon.queue.dispatch picks among them: fair between rules, sticky to loaded models).
    # Plans are stored with "units"; ledgers written by earlier versions call them "steps".
    _HEADS = """
    SELECT id, rule, step, attempts, profile, rn FROM (
      SELECT j.id, j.rule, j.step, j.attempts,
             COALESCE(json_extract(p.plan, '$.units[' || j.step_index || '].model'),
                      json_extract(p.plan, '$.steps[' || j.step_index || '].model')) AS profile,
             ROW_NUMBER() OVER (PARTITION BY j.rule ORDER BY j.not_before, j.created_at, j.step_index) AS rn
      FROM jobs j JOIN plans p ON p.id = j.plan_id
      WHERE j.state = ? AND j.not_before <= ?
    ) WHERE rn <= ? ORDER BY rule, rn
    """

    def due_heads(self, per_rule: int, now: float | None = None) -> list[Candidate]:
        """The first ``per_rule`` due jobs of every rule, by rule, in the queue's order."""
        now = self._clock() if now is None else now
        with self._lock:
            rows = self._db.execute(self._HEADS, (JobState.QUEUED, now, per_rule)).fetchall()
        return [Candidate(r["id"], r["rule"], r["step"], r["attempts"], r["profile"]) for r in rows]

    def claim_ids(self, owner: str, ids: list[str]) -> list[JobRow]:
        """Claim exactly these jobs if they are still queued (the transition of ``claim``)."""
        if not ids:
            return []
        now = self._clock()
        marks = ",".join("?" * len(ids))
        with self._tx() as db:
            db.execute(
                f"UPDATE jobs SET state=?, attempts=attempts+1, lease_owner=?, on_worker_at=NULL, updated_at=?"
                f" WHERE state=? AND id IN ({marks})",
                (JobState.RUNNING, owner, now, JobState.QUEUED, *ids),
            )
            rows = db.execute(
                f"SELECT * FROM jobs WHERE lease_owner=? AND state=? AND id IN ({marks})",
                (owner, JobState.RUNNING, *ids),
            ).fetchall()
        order = {jid: i for i, jid in enumerate(ids)}
        return sorted((JobRow.from_row(r) for r in rows), key=lambda j: order[j.id])

    def next_due(self) -> float | None:
        """When the earliest queued job becomes runnable (for the dispatcher's sleep)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(not_before) AS t FROM jobs WHERE state IN (?, ?)",
                (JobState.QUEUED, JobState.HELD),
            ).fetchone()
        t: float | None = row["t"]
        return t

    def complete(self, job_id_: str, outputs: list[OutputRecord], seconds: float) -> None:
        """Mark done (outputs already committed) and release the units that wait on it."""
        now = self._clock()
        # Only the fields a record was given are stored: the manifest shows the same keys.
        stored = json.dumps([o.model_dump(mode="json", exclude_unset=True) for o in outputs])
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, outputs=?, seconds=?, error=NULL, lease_owner=NULL,"
                " updated_at=? WHERE id=?",
                (JobState.DONE, stored, seconds, now, job_id_),
            )
            self._release_dependents(db, job_id_, now)

    def fail(self, job_id_: str, reason: str, *, retryable: bool) -> JobState:
        """Retry later with backoff, or end the job (and the steps waiting on it)."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT attempts FROM jobs WHERE id=?", (job_id_,)).fetchone()
            attempts = row["attempts"]
            if retryable and attempts < self.max_attempts:
                delay = self.retry_backoff * 2 ** (attempts - 1)
                db.execute(
                    "UPDATE jobs SET state=?, error=?, not_before=?, lease_owner=NULL, updated_at=? WHERE id=?",
                    (JobState.QUEUED, reason, now + delay, now, job_id_),
                )
                return JobState.QUEUED
            if retryable:
                reason = f"{reason} (gave up after {attempts} attempts)"
            self._fail_chain(db, job_id_, reason, now)
            return JobState.FAILED

    def _fail_chain(self, db: sqlite3.Connection, job_id_: str, reason: str, now: float) -> None:
        db.execute(
            "UPDATE jobs SET state=?, error=?, lease_owner=NULL, updated_at=? WHERE id=?",
            (JobState.FAILED, reason, now, job_id_),
        )
        self._release_dependents(db, job_id_, now)

    def _release_dependents(self, db: sqlite3.Connection, job_id_: str, now: float) -> None:
        """When every unit of a rule step has ended, the units that take its outputs run (if
        any of them made outputs) or fail (if none did)."""
        row = db.execute("SELECT plan_id, step_name FROM jobs WHERE id=?", (job_id_,)).fetchone()
        siblings = db.execute(
            "SELECT state FROM jobs WHERE plan_id=? AND step_name=?",
            (row["plan_id"], row["step_name"]),
        ).fetchall()
        states = {JobState(r["state"]) for r in siblings}
        if not all(s.terminal for s in states):
            return
        children = db.execute(
            "SELECT id FROM jobs WHERE plan_id=? AND depends_on=? AND state=?",
            (row["plan_id"], row["step_name"], JobState.WAITING),
        ).fetchall()
        for child in children:
            if JobState.DONE in states:
                db.execute(
                    "UPDATE jobs SET state=?, updated_at=? WHERE id=?",
                    (JobState.QUEUED, now, child["id"]),
                )
            else:
                self._fail_chain(
                    db, child["id"], f"not run: its input step {row['step_name']!r} failed", now
                )

    def defer(self, job_id_: str, until: float, reason: str) -> None:
        """Put a running job back until ``until`` without counting the attempt (budgets)."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, attempts=MAX(attempts-1, 0), not_before=?, error=?,"
                " lease_owner=NULL, updated_at=? WHERE id=?",
                (JobState.QUEUED, until, reason, self._clock(), job_id_),
            )

    def spend(self, since: float = 0.0) -> dict[tuple[str, str], float]:
        """Estimated hosted-model spend (USD) by (rule, local day) from committed outputs."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rule, outputs, updated_at FROM jobs WHERE state=? AND updated_at>=?"
                " AND outputs LIKE '%\"cost\"%'",
                (JobState.DONE, since),
            ).fetchall()
        totals: dict[tuple[str, str], float] = {}
        for row in rows:
            day = time.strftime("%Y-%m-%d", time.localtime(row["updated_at"]))
            cost = sum(o.get("cost") or 0.0 for o in json.loads(row["outputs"] or "[]"))
            totals[(row["rule"], day)] = totals.get((row["rule"], day), 0.0) + cost
        return totals

    def spend_today(self, rule: str) -> float:
        today = time.strftime("%Y-%m-%d")
        midnight = time.mktime(time.strptime(today, "%Y-%m-%d"))
        return self.spend(midnight).get((rule, today), 0.0)

    def release(self, job_id_: str) -> None:
        """Put a running job back without counting the attempt (graceful shutdown)."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, attempts=MAX(attempts-1, 0), lease_owner=NULL, updated_at=? WHERE id=? AND state=?",
                (JobState.QUEUED, self._clock(), job_id_, JobState.RUNNING),
            )

    def on_worker(self, job_ids: list[str]) -> None:
        """Note that these claimed jobs' processing began (decoding, then the worker): from
        now on a crash is charged to them (:meth:`recover`)."""
        if not job_ids:
            return
        marks = ",".join("?" * len(job_ids))
        with self._tx() as db:
            db.execute(
                f"UPDATE jobs SET on_worker_at=? WHERE state=? AND on_worker_at IS NULL"
                f" AND id IN ({marks})",
                (self._clock(), JobState.RUNNING, *job_ids),
            )

    def hold(self, job_id_: str, reason: str) -> float:
        """An environment fault stopped this running job: hold it with ``reason``, without
        counting the attempt, and try again after a capped exponential backoff. Returns the
        delay in seconds."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT holds FROM jobs WHERE id=?", (job_id_,)).fetchone()
            delay = min(self.hold_backoff_max, self.hold_backoff * 2 ** (row["holds"] or 0))
            db.execute(
                "UPDATE jobs SET state=?, error=?, not_before=?, holds=holds+1,"
                " attempts=MAX(attempts-1, 0), lease_owner=NULL, on_worker_at=NULL, updated_at=?"
                " WHERE id=?",
                (JobState.HELD, reason, now + delay, now, job_id_),
            )
        return delay

    def resume_held(self, *, now: float | None = None, everything: bool = False) -> list[str]:
        """Queue held jobs whose backoff has passed (every held job with ``everything``: a
        config reload or ``darkroom retry --held``, when the cause may be fixed). Returns
        the ids queued; their reason stays until they run."""
        now = self._clock() if now is None else now
        with self._tx() as db:
            if everything:
                rows = db.execute("SELECT id FROM jobs WHERE state=?", (JobState.HELD,)).fetchall()
            else:
                rows = db.execute(
                    "SELECT id FROM jobs WHERE state=? AND not_before<=?", (JobState.HELD, now)
                ).fetchall()
            ids = [r["id"] for r in rows]
            for jid in ids:
                db.execute(
                    "UPDATE jobs SET state=?, not_before=?, updated_at=? WHERE id=? AND state=?",
                    (JobState.QUEUED, 0 if everything else now, now, jid, JobState.HELD),
                )
        return ids

    def held(self, limit: int = 100) -> tuple[list[JobRow], int]:
        """Held jobs, latest first (at most ``limit``), and how many there are in all."""
        with self._lock:
            total: int = self._db.execute(
                "SELECT COUNT(*) AS n FROM jobs WHERE state=?", (JobState.HELD,)
            ).fetchone()["n"]
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE state=? ORDER BY updated_at DESC LIMIT ?",
                (JobState.HELD, limit),
            ).fetchall()
        return [JobRow.from_row(r) for r in rows], total

    def recover(self) -> int:
        """After a crash: jobs left running are queued again. Only those a worker was running
        keep their attempt (so an input that kills the process every time still ends failed);
        jobs that were merely claimed ahead of the worker get theirs back. Returns how many."""
        now = self._clock()
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, attempts, on_worker_at FROM jobs WHERE state=?", (JobState.RUNNING,)
            ).fetchall()
            for row in rows:
                if row["on_worker_at"] is None:  # claimed, never started: not its fault
                    db.execute(
                        "UPDATE jobs SET state=?, attempts=MAX(attempts-1, 0), lease_owner=NULL,"
                        " updated_at=? WHERE id=?",
                        (JobState.QUEUED, now, row["id"]),
                    )
                elif row["attempts"] >= self.max_attempts:
                    self._fail_chain(
                        db,
                        row["id"],
                        f"the daemon stopped during each of {row['attempts']} attempts",
                        now,
                    )
                else:
                    db.execute(
                        "UPDATE jobs SET state=?, lease_owner=NULL, updated_at=? WHERE id=?",
                        (JobState.QUEUED, now, row["id"]),
                    )
        return len(rows)

    # -- plans -----------------------------------------------------------------------

    def plan(self, pid: str) -> PlanRow:
        """The plan ``pid``; KeyError when the ledger has none (pruned, never submitted)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM plans WHERE id=?", (pid,)).fetchone()
        if row is None:
            raise KeyError(pid)
        return PlanRow.from_row(row)

    def jobs_of(self, pid: str) -> list[JobRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE plan_id=? ORDER BY step_index", (pid,)
            ).fetchall()
        return [JobRow.from_row(r) for r in rows]

    def job(self, jid: str) -> JobRow:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (jid,)).fetchone()
        if row is None:
            raise KeyError(jid)
        return JobRow.from_row(row)

    def unfinished_plans(self) -> list[str]:
        """Active plans whose jobs have all ended: their manifest still has to be written."""
        with self._lock:
            rows = self._db.execute(
                "SELECT p.id FROM plans p WHERE p.state='active' AND NOT EXISTS"
                " (SELECT 1 FROM jobs j WHERE j.plan_id=p.id AND j.state NOT IN ('done', 'failed'))"
            ).fetchall()
        return [r["id"] for r in rows]

    def adopt(self, pid: str, note: str) -> None:
        """Close a plan whose outputs another daemon committed: its jobs count as done."""
        now = self._clock()
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, error=?, lease_owner=NULL, updated_at=? WHERE plan_id=?",
                (JobState.DONE, note, now, pid),
            )
            db.execute(
                "UPDATE plans SET state=?, finished_at=? WHERE id=?", (PlanState.DONE, now, pid)
            )

    def others_want(self, pid: str, source: str, key: str, sha256: str) -> bool:
        """Whether another plan for the same file is still running or succeeded."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM plans WHERE source=? AND key=? AND sha256=? AND id!=? AND state IN"
                " ('active', 'done', 'partial') LIMIT 1",
                (source, key, sha256, pid),
            ).fetchone()
        return row is not None

    def record_quarantine(
        self, source: str, key: str, sha256: str, reason: str, location: str | None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO quarantine (source, key, sha256, reason, location, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (source, key, sha256, reason, location, self._clock()),
            )
            if _moved_away(location):
                # The file left its key: if someone moves it back, it must be read again
                # (same size and mtime), not skipped as seen.
                db.execute("DELETE FROM seen WHERE source=? AND key=?", (source, key))

    def clear_quarantine(self, source: str, key: str, sha256: str) -> int:
        """These bytes were processed after all (a fixed sidecar re-admitted the image): they
        are no longer listed as quarantined. Returns how many records went."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM quarantine WHERE source=? AND key=? AND sha256=?",
                (source, key, sha256),
            )
        return cur.rowcount

    def requeue_quarantined(self, source: str, key: str, sha256: str | None = None) -> list[str]:
        """Re-admit a quarantined input (its file is back at ``key``): its failed plans run
        again as a new round and the quarantine record goes. Returns the plan ids re-run."""
        now = self._clock()
        rerun: list[str] = []
        with self._tx() as db:
            query = "SELECT id FROM plans WHERE source=? AND key=? AND state!='active'"
            args: list[str] = [source, key]
            if sha256:
                query += " AND sha256=?"
                args.append(sha256)
            for row in db.execute(query, args).fetchall():
                if self._readmit(db, row["id"], now):
                    rerun.append(row["id"])
            if sha256:
                db.execute(
                    "DELETE FROM quarantine WHERE source=? AND key=? AND sha256=?",
                    (source, key, sha256),
                )
            else:
                db.execute("DELETE FROM quarantine WHERE source=? AND key=?", (source, key))
            db.execute("DELETE FROM seen WHERE source=? AND key=?", (source, key))
        return rerun

    def _readmit(self, db: sqlite3.Connection, pid: str, now: float) -> bool:
        """Queue a finished plan's failed jobs again (a new round); False when none failed."""
        rows = db.execute(
            "SELECT * FROM jobs WHERE plan_id=? AND state=? AND (depends_on IS NULL OR"
            " error IS NULL OR error NOT LIKE 'not run: its input step%')",
            (pid, JobState.FAILED),
        ).fetchall()
        for row in rows:
            self._requeue_failed(db, row, now)
        return bool(rows)

    def _requeue_failed(self, db: sqlite3.Connection, row: sqlite3.Row, now: float) -> None:
        """A failed job queued again with a fresh attempt budget; the units that failed only
        because of it wait again; a plan already committed counts a re-run (a new round)."""
        db.execute(
            "UPDATE plans SET reruns=reruns+1 WHERE id=? AND state!='active'", (row["plan_id"],)
        )
        db.execute(
            "UPDATE jobs SET state=?, attempts=0, holds=0, not_before=0, error=NULL, updated_at=?"
            " WHERE id=?",
            (JobState.QUEUED, now, row["id"]),
        )
        db.execute(
            "UPDATE jobs SET state=?, error=NULL, updated_at=? WHERE plan_id=? AND step_index>?"
            " AND state=? AND error LIKE 'not run: its input step%'",
            (JobState.WAITING, now, row["plan_id"], row["step_index"], JobState.FAILED),
        )
        db.execute(
            "UPDATE plans SET state='active', finished_at=NULL WHERE id=?", (row["plan_id"],)
        )

    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM quarantine ORDER BY at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [dict(r) for r in rows]

    def note_prior_manifest(self, pid: str, version: str | None) -> None:
        """Remember the version of the manifest this plan's round replaces (None: there was
        none), so its own manifest is written only over that one (S3: IfMatch)."""
        with self._tx() as db:
            db.execute("UPDATE plans SET prior_manifest=? WHERE id=?", (version or ABSENT, pid))

    def prior_manifest(self, pid: str) -> tuple[bool, str | None]:
        """(known, version): whether :meth:`note_prior_manifest` ran for this plan, and the
        version it noted (None: no manifest was there)."""
        with self._lock:
            row = self._db.execute("SELECT prior_manifest FROM plans WHERE id=?", (pid,)).fetchone()
        value = row["prior_manifest"] if row else None
        if value is None:
            return False, None
        return True, None if value == ABSENT else value

    def note_round(self, pid: str, rounds: list[RoundSummary]) -> None:
        """Keep the earlier rounds of this plan's folder (the manifest lists them)."""
        stored = json.dumps([r.model_dump(mode="json", exclude_unset=True) for r in rounds])
        with self._tx() as db:
            db.execute("UPDATE plans SET rounds=? WHERE id=?", (stored, pid))

    def finish_plan(self, pid: str, state: PlanState) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE plans SET state=?, finished_at=? WHERE id=?", (state, self._clock(), pid)
            )

    # -- operator actions ----------------------------------------------------------------

    def retry(self, job_ids: list[str] | None = None) -> list[str]:
        """Queue failed jobs again with a fresh attempt budget (all failed ones if
        ``job_ids`` is None); units that failed only because of them wait again. A held job
        named in ``job_ids`` is queued at once. When the plan's manifest was committed
        already, the re-run is a new round of its folder (``reruns``): it is not mistaken
        for another daemon's commit. Returns the ids queued."""
        now = self._clock()
        queued = []
        with self._tx() as db:
            if job_ids is None:
                rows = db.execute(
                    "SELECT * FROM jobs WHERE state=? AND (depends_on IS NULL OR error NOT LIKE"
                    " 'not run: its input step%')",
                    (JobState.FAILED,),
                ).fetchall()
            else:
                marks = ",".join("?" * len(job_ids))
                rows = db.execute(f"SELECT * FROM jobs WHERE id IN ({marks})", job_ids).fetchall()
            for row in rows:
                if row["state"] == JobState.HELD:
                    db.execute(
                        "UPDATE jobs SET state=?, not_before=0, updated_at=? WHERE id=?",
                        (JobState.QUEUED, now, row["id"]),
                    )
                    queued.append(row["id"])
                    continue
                if row["state"] != JobState.FAILED:
                    continue
                self._requeue_failed(db, row, now)
                queued.append(row["id"])
        return queued

    def note_rerun_archived(self, pid: str, reruns: int) -> None:
        """The committed round a re-run replaces has been kept under rounds/N/."""
        with self._tx() as db:
            db.execute("UPDATE plans SET reruns_archived=? WHERE id=?", (reruns, pid))

    def cancel(self, job_id_: str) -> JobState:
        """End a queued or waiting job (and the units after it). Returns the job's state
        before; a running job is left to finish."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id_,)).fetchone()
            if row is None:
                raise KeyError(job_id_)
            if row["state"] in (JobState.QUEUED, JobState.WAITING, JobState.HELD):
                self._fail_chain(db, job_id_, "cancelled by an operator", self._clock())
            return JobState(row["state"])

    def find_job(self, prefix: str) -> JobRow | None:
        """A job by its id or an unambiguous prefix of it (as ``jobs ls`` prints them)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE id LIKE ? LIMIT 2", (prefix + "%",)
            ).fetchall()
        return JobRow.from_row(rows[0]) if len(rows) == 1 else None

    def prune(self, before: float) -> int:
        """Forget finished plans (and their jobs) last touched before ``before``, and seen
        records as old. Outputs are untouched; a pruned file that arrives again runs again."""
        with self._tx() as db:
            old = [
                r["id"]
                for r in db.execute(
                    "SELECT id FROM plans WHERE state!='active' AND COALESCE(finished_at, created_at) < ?",
                    (before,),
                ).fetchall()
            ]
            for pid in old:
                db.execute("DELETE FROM jobs WHERE plan_id=?", (pid,))
                db.execute("DELETE FROM plans WHERE id=?", (pid,))
            db.execute("DELETE FROM seen WHERE at < ?", (before,))
            db.execute("DELETE FROM quarantine WHERE at < ?", (before,))
        return len(old)

    def oldest_active_by_source(self) -> dict[str, float]:
        with self._lock:
            rows = self._db.execute(
                "SELECT source, MIN(created_at) AS t FROM plans WHERE state='active'"
                " GROUP BY source"
            ).fetchall()
        return {r["source"]: r["t"] for r in rows}

    # -- reporting -------------------------------------------------------------------

    def counts_by_rule(self) -> dict[str, dict[str, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT rule, state, COUNT(*) AS n FROM jobs GROUP BY rule, state"
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["rule"], {})[r["state"]] = r["n"]
        return out

    def plan_count(self) -> int:
        with self._lock:
            n: int = self._db.execute("SELECT COUNT(*) AS n FROM plans").fetchone()["n"]
        return n

    def seen_since(
        self, since: float, sources: list[str]
    ) -> list[tuple[str, str, int, int, str | None]]:
        """Inputs (not sidecars) last seen at or after ``since`` from these sources."""
        marks = ",".join("?" * len(sources))
        with self._lock:
            rows = self._db.execute(
                f"SELECT source, key, size, mtime_ns, etag FROM seen WHERE at>=? AND source IN ({marks})"
                " AND outcome != 'sidecar' ORDER BY at",
                (since, *sources),
            ).fetchall()
        return [(r["source"], r["key"], r["size"], r["mtime_ns"], r["etag"]) for r in rows]

    ADOPTED_NOTE = "already committed by another daemon sharing the sink"

    def plan_counts(self) -> dict[str, int]:
        """Plans by state; a plan another daemon committed counts as ``adopted``, not done."""
        with self._lock:
            rows = self._db.execute(
                "SELECT CASE WHEN p.state='done' AND EXISTS (SELECT 1 FROM jobs j WHERE"
                " j.plan_id=p.id AND j.error=?) THEN 'adopted' ELSE p.state END AS s,"
                " COUNT(*) AS n FROM plans p GROUP BY s",
                (self.ADOPTED_NOTE,),
            ).fetchall()
        return {r["s"]: r["n"] for r in rows}

    def quarantined_count(self) -> int:
        with self._lock:
            n: int = self._db.execute("SELECT COUNT(*) AS n FROM quarantine").fetchone()["n"]
        return n

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"
            ).fetchall()
        return {r["state"]: r["n"] for r in rows}

    def jobs(
        self, state: str | None = None, rule: str | None = None, limit: int = 1000
    ) -> list[JobRow]:
        query, args = "SELECT * FROM jobs WHERE 1=1", list[str | int]()
        if state:
            query += " AND state=?"
            args.append(state)
        if rule:
            query += " AND rule=?"
            args.append(rule)
        query += " ORDER BY updated_at DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [JobRow.from_row(r) for r in self._db.execute(query, args).fetchall()]

    def plans(self, state: PlanState | None = None) -> list[PlanRow]:
        with self._lock:
            if state:
                rows = self._db.execute(
                    "SELECT * FROM plans WHERE state=? ORDER BY created_at", (state,)
                ).fetchall()
            else:
                rows = self._db.execute("SELECT * FROM plans ORDER BY created_at").fetchall()
        return [PlanRow.from_row(r) for r in rows]

    def plans_of(self, source: str, key: str) -> list[PlanRow]:
        """Every plan an input ever had (all versions, all rules), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM plans WHERE source=? AND key=? ORDER BY created_at", (source, key)
            ).fetchall()
        return [PlanRow.from_row(r) for r in rows]
