"""The ledger's rows as typed records: a job, a plan, a due job the dispatcher may claim.

The SQLite columns of ``jobs`` keep their first names (``step``, ``step_name``,
``step_index``); the attributes say what they hold: a plan's *unit* (one model run), the
rule *step* it belongs to, and its index in ``Plan.units``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from daemon.outputs.manifest import RoundSummary
from daemon.types import JobState, OutputRecord, Plan, PlanState

__all__ = ["Candidate", "JobRow", "PlanRow"]


@dataclass
class JobRow:
    """One job: one unit of one plan, with its state and (once done) its outputs."""

    id: str
    plan_id: str
    unit_id: str  # "explore", or "explore:sd-turbo" in a compare step
    unit_name: str  # the rule step's name
    unit_index: int  # its index in Plan.units
    rule: str
    state: JobState
    attempts: int
    error: str | None
    outputs: list[OutputRecord]
    seconds: float | None
    updated_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRow:
        stored = json.loads(row["outputs"]) if row["outputs"] else []
        return cls(
            id=row["id"],
            plan_id=row["plan_id"],
            unit_id=row["step"],
            unit_name=row["step_name"],
            unit_index=row["step_index"],
            rule=row["rule"],
            state=JobState(row["state"]),
            attempts=row["attempts"],
            error=row["error"],
            outputs=[OutputRecord.model_validate(o) for o in stored],
            seconds=row["seconds"],
            updated_at=row["updated_at"],
        )


@dataclass
class PlanRow:
    """One plan as the ledger holds it, with the earlier rounds of its output folder."""

    id: str
    source: str
    key: str
    sha256: str
    rule: str
    rule_digest: str
    plan: Plan
    state: PlanState
    created_at: float
    rounds: list[RoundSummary]
    reruns: int = 0  # operator re-runs after its manifest was committed (each a new round)
    reruns_archived: int = 0  # of those, how many had the round they replace kept

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> PlanRow:
        rounds = json.loads(row["rounds"]) if row["rounds"] else []
        return cls(
            id=row["id"],
            source=row["source"],
            key=row["key"],
            sha256=row["sha256"],
            rule=row["rule"],
            rule_digest=row["rule_digest"],
            plan=Plan.model_validate_json(row["plan"]),
            state=PlanState(row["state"]),
            created_at=row["created_at"],
            rounds=[RoundSummary.model_validate(r) for r in rounds],
            reruns=row["reruns"],  # the ledger adds these columns to older files at open
            reruns_archived=row["reruns_archived"],
        )


@dataclass(frozen=True)
class Candidate:
    """A due job the dispatcher may claim, with the profile it would load."""

    id: str
    rule: str
    unit_id: str
    attempts: int
    profile: str | None
