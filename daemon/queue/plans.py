"""Plans in the ledger (table ``plans``, with the ``jobs`` rows a submission creates): the
idempotent submit, a plan's state from active to done, its rounds and prior manifest, and
forgetting finished plans.

A plan's id is derived from its asset (source, key), content, rule and rule digest
(:func:`daemon.queue.ids.plan_id`), so submitting the same file for the same rule twice — a
duplicate event, a rescan, a restart — is a no-op, while the same bytes at another path are
a plan of their own. A plan is ``done`` only after its manifest (the commit marker) has been
written.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from daemon.outputs import placement
from daemon.outputs.manifest import RoundSummary
from daemon.queue.arrivals import Arrivals
from daemon.queue.bulk import insert_rows, select_in
from daemon.queue.ids import job_id, legacy_plan_id, plan_id
from daemon.queue.owners import Owners
from daemon.queue.rows import PlanRow
from daemon.queue.store import Store
from daemon.types import JobState, Plan, PlanState

__all__ = ["ABSENT", "Plans"]

# prior_manifest's value when the plan's folder held no manifest (an ETag is never this).
ABSENT = "absent"

_PLANS = "plans (id, source, key, sha256, rule, rule_digest, plan, created_at)"
_JOB_INSERT = (
    "INSERT INTO jobs (id, plan_id, step, step_name, step_index, depends_on,"
    " rule, state, error, created_at, updated_at)"
)


def _plan_id(plan: Plan) -> str:
    return plan_id(plan.content, plan.rule, plan.digest, plan.arrival.source, plan.arrival.key)


def _plan_row(pid: str, plan: Plan, now: float) -> tuple[object, ...]:
    arrival = plan.arrival
    return (pid, arrival.source, arrival.key, plan.sha256, plan.rule, plan.digest,
            plan.model_dump_json(), now)  # fmt: skip


def _job_rows(pid: str, plan: Plan, now: float) -> list[tuple[object, ...]]:
    """One job per unit: queued when it takes the source, waiting when it takes another
    step's outputs, failed when the plan cannot run as written (e.g. an unknown variable)."""
    rows: list[tuple[object, ...]] = []
    for index, unit in enumerate(plan.units):
        depends = None if unit.input == "source" else unit.input
        state = JobState.QUEUED if depends is None else JobState.WAITING
        if plan.error:
            state = JobState.FAILED
        rows.append((job_id(pid, unit.id), pid, unit.id, unit.name, index, depends, plan.rule,
                     state, plan.error, now, now))  # fmt: skip
    return rows


class Plans:
    def __init__(self, store: Store, owners: Owners, arrivals: Arrivals):
        self._store = store
        self._owners = owners
        self._arrivals = arrivals

    def submit(self, plan: Plan) -> tuple[str, bool]:
        """Record a plan and its jobs (one per unit); returns (plan id, created). Idempotent:
        the id is the asset (source, key) + content (image bytes + sidecar + mask) + rule +
        rule digest; a job's adds its unit id. A new plan is placed in an output folder its
        asset owns (:meth:`Owners.place`): the stored plan may differ from ``plan`` there."""
        pid = _plan_id(plan)
        now = self._store.clock()
        with self._store.tx() as db:
            known = self._known_plan(db, pid, plan)
            if known is not None:
                return known, self._arrivals.readmit_moved_back(db, known, plan, now)
            plan = self._owners.place(db, plan, now)
            row = _plan_row(pid, plan, now)
            cur = db.execute(
                f"INSERT OR IGNORE INTO {_PLANS} VALUES ({','.join('?' * len(row))})", row
            )
            if cur.rowcount == 0:
                return pid, False
            insert_rows(db, _JOB_INSERT, _job_rows(pid, plan, now))
        return pid, True

    def submit_group(self, plans: Sequence[Plan]) -> list[tuple[str, bool]]:
        """``submit`` for each plan, in order, with the same results, in a few statements
        for the whole group instead of five or six per plan (intake's writer in a burst):
        one lookup of the ids already recorded, one of the owners of the folders asked
        for, and multi-row inserts. A plan whose folder another asset owns, and every plan
        after it, is placed one at a time (:meth:`Owners.place`); a group naming one plan
        twice is submitted one plan at a time."""
        ids = [_plan_id(plan) for plan in plans]
        if len(set(ids)) < len(ids):
            return [self.submit(plan) for plan in plans]
        legacy = {
            pid: legacy_plan_id(plan.content, plan.rule, plan.digest)
            for pid, plan in zip(ids, plans, strict=True)
        }
        now = self._store.clock()
        with self._store.tx() as db:
            recorded = {
                row["id"]: (row["source"], row["key"])
                for row in select_in(
                    db,
                    "SELECT id, source, key FROM plans WHERE id IN ({})",
                    ids + [*legacy.values()],
                )
            }
            owners = {
                (row["sink"], row["folder"]): (row["source"], row["key"])
                for row in select_in(
                    db,
                    "SELECT sink, folder, source, key FROM owners WHERE folder IN ({})",
                    [placement.owned_folder(plan.manifest) for plan in plans],
                )
            }
            results: list[tuple[str, bool]] = []
            owner_rows: list[tuple[str, str, str, str, float]] = []
            plan_rows: list[tuple[object, ...]] = []
            job_rows: list[tuple[object, ...]] = []
            one_at_a_time = False
            for pid, plan in zip(ids, plans, strict=True):
                asset = (plan.arrival.source, plan.arrival.key)
                known = pid if pid in recorded else None
                if known is None and recorded.get(legacy[pid]) == asset:
                    known = legacy[pid]
                if known is not None:
                    results.append((known, self._arrivals.readmit_moved_back(db, known, plan, now)))
                    continue
                folder = (plan.sink, placement.owned_folder(plan.manifest))
                owner = owners.get(folder)
                if not one_at_a_time and owner is None:
                    owners[folder] = asset
                    owner_rows.append((*folder, *asset, now))
                elif one_at_a_time or owner != asset:
                    # Another asset's folder: placed beside it, which reads the owners table,
                    # so every owner so far goes in first and the rest are placed one by one.
                    one_at_a_time = True
                    self._owners.record(db, owner_rows)
                    owner_rows = []
                    plan = self._owners.place(db, plan, now)
                plan_rows.append(_plan_row(pid, plan, now))
                job_rows += _job_rows(pid, plan, now)
                results.append((pid, True))
            self._owners.record(db, owner_rows)
            insert_rows(db, f"INSERT INTO {_PLANS}", plan_rows)
            insert_rows(db, _JOB_INSERT, job_rows)
        return results

    def _known_plan(self, db: sqlite3.Connection, pid: str, plan: Plan) -> str | None:
        """The id under which this very plan is already recorded: ``pid``, or the id an older
        ledger gave it (content + rule + digest) when that row is for the same asset."""
        legacy = legacy_plan_id(plan.content, plan.rule, plan.digest)
        rows = db.execute(  # one lookup for both ids (intake asks this for every arrival)
            "SELECT id, source, key FROM plans WHERE id IN (?, ?)", (pid, legacy)
        ).fetchall()
        ids = {r["id"] for r in rows}
        if pid in ids:
            return pid
        asset = (plan.arrival.source, plan.arrival.key)
        return legacy if any((r["source"], r["key"]) == asset for r in rows) else None

    def plan_states(self, ids: list[str]) -> dict[str, PlanState]:
        """The state of each of these plans that the ledger has, in one query."""
        with self._store.lock:
            rows = select_in(self._store.db, "SELECT id, state FROM plans WHERE id IN ({})", ids)
        return {r["id"]: PlanState(r["state"]) for r in rows}

    def plan(self, pid: str) -> PlanRow:
        """The plan ``pid``; KeyError when the ledger has none (pruned, never submitted)."""
        with self._store.lock:
            row = self._store.db.execute("SELECT * FROM plans WHERE id=?", (pid,)).fetchone()
        if row is None:
            raise KeyError(pid)
        return PlanRow.from_row(row)

    def unfinished_plans(self) -> list[str]:
        """Active plans whose jobs have all ended: their manifest still has to be written."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT p.id FROM plans p WHERE p.state='active' AND NOT EXISTS"
                " (SELECT 1 FROM jobs j WHERE j.plan_id=p.id AND j.state NOT IN ('done', 'failed'))"
            ).fetchall()
        return [r["id"] for r in rows]

    def adopt(self, pid: str, note: str) -> None:
        """Close a plan whose outputs another daemon committed: its jobs count as done."""
        now = self._store.clock()
        with self._store.tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, error=?, lease_owner=NULL, updated_at=? WHERE plan_id=?",
                (JobState.DONE, note, now, pid),
            )
            db.execute(
                "UPDATE plans SET state=?, finished_at=? WHERE id=?", (PlanState.DONE, now, pid)
            )

    def others_want(self, pid: str, source: str, key: str, sha256: str) -> bool:
        """Whether another plan for the same file is still running or succeeded."""
        with self._store.lock:
            row = self._store.db.execute(
                "SELECT 1 FROM plans WHERE source=? AND key=? AND sha256=? AND id!=? AND state IN"
                " ('active', 'done', 'partial') LIMIT 1",
                (source, key, sha256, pid),
            ).fetchone()
        return row is not None

    def note_prior_manifest(self, pid: str, version: str | None) -> None:
        """Remember the version of the manifest this plan's round replaces (None: there was
        none), so its own manifest is written only over that one (S3: IfMatch)."""
        with self._store.tx() as db:
            db.execute("UPDATE plans SET prior_manifest=? WHERE id=?", (version or ABSENT, pid))

    def prior_manifest(self, pid: str) -> tuple[bool, str | None]:
        """(known, version): whether :meth:`note_prior_manifest` ran for this plan, and the
        version it noted (None: no manifest was there)."""
        with self._store.lock:
            row = self._store.db.execute(
                "SELECT prior_manifest FROM plans WHERE id=?", (pid,)
            ).fetchone()
        value = row["prior_manifest"] if row else None
        if value is None:
            return False, None
        return True, None if value == ABSENT else value

    def note_round(self, pid: str, rounds: list[RoundSummary]) -> None:
        """Keep the earlier rounds of this plan's folder (the manifest lists them)."""
        stored = json.dumps([r.model_dump(mode="json", exclude_unset=True) for r in rounds])
        with self._store.tx() as db:
            db.execute("UPDATE plans SET rounds=? WHERE id=?", (stored, pid))

    def finish_plan(self, pid: str, state: PlanState) -> None:
        with self._store.tx() as db:
            db.execute(
                "UPDATE plans SET state=?, finished_at=? WHERE id=?",
                (state, self._store.clock(), pid),
            )

    def prune(self, before: float) -> int:
        """Forget finished plans (and their jobs) last touched before ``before``, and seen
        records as old. Outputs are untouched; a pruned file that arrives again runs again."""
        with self._store.tx() as db:
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
