"""The ledger's SQLite schema and its migrations: the tables, the columns added since, and
the owners recorded for a ledger written before output ownership existed."""

from __future__ import annotations

import sqlite3

from daemon.outputs import placement

__all__ = ["ADDED_COLUMNS", "SCHEMA", "add_missing_columns", "migrate", "record_earlier_owners"]

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
-- the dispatcher's heads: per rule, its due jobs in queue order (Ledger.due_heads)
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(state, rule, not_before, created_at, step_index);
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

# Columns added after a table was first created: (table, column, declaration). Ledgers
# written by an earlier version get them at open; CREATE TABLE above already has them.
ADDED_COLUMNS: list[tuple[str, str, str]] = [
    ("plans", "prior_manifest", "TEXT"),
    ("jobs", "on_worker_at", "REAL"),
    ("jobs", "holds", "INTEGER NOT NULL DEFAULT 0"),
    ("plans", "reruns", "INTEGER NOT NULL DEFAULT 0"),
    ("plans", "reruns_archived", "INTEGER NOT NULL DEFAULT 0"),
]


def migrate(db: sqlite3.Connection) -> None:
    """Create what is missing and bring a ledger written by an earlier version up to date."""
    db.executescript(SCHEMA)
    add_missing_columns(db)
    record_earlier_owners(db)


def add_missing_columns(db: sqlite3.Connection) -> None:
    for table, column, declaration in ADDED_COLUMNS:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def record_earlier_owners(db: sqlite3.Connection) -> None:
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
