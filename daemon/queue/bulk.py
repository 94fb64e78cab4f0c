"""Many rows per statement: what a group write uses instead of one statement per row.

Each statement is a trip through SQLite and, on the way, a release of the GIL that the
writing thread must win back from the daemon's other threads; in a burst of arrivals that
hand-off, not SQLite, was most of a write's cost. Rows go in chunks that stay well under
SQLite's bound-parameter limit (999 before 3.32).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["CHUNK_PARAMS", "insert_rows", "select_in"]

CHUNK_PARAMS = 900


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_rows(db: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``head`` (``"INSERT INTO t (a, b)"``) followed by ``VALUES`` for every row, a chunk
    of rows per statement."""
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ",".join("?" * width) + ")"
    for chunk in _chunks(rows, max(1, CHUNK_PARAMS // width)):
        params = [value for row in chunk for value in row]
        db.execute(f"{head} VALUES {','.join([one] * len(chunk))}", params)


def select_in(db: sqlite3.Connection, query: str, values: Sequence[Any]) -> list[sqlite3.Row]:
    """``query`` with its one ``{}`` replaced by placeholders for ``values``, a chunk at a
    time; every chunk's rows."""
    rows: list[sqlite3.Row] = []
    for chunk in _chunks(list(dict.fromkeys(values)), CHUNK_PARAMS):
        rows += db.execute(query.format(",".join("?" * len(chunk))), list(chunk)).fetchall()
    return rows
