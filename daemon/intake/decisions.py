"""Intake decisions: what one arrival becomes, decided before anything is written.

The intake thread (:class:`~daemon.intake.intake.Intake`) fills them in; the writer
(:class:`~daemon.intake.writer.DecisionWriter`) writes each group of them in one ledger
transaction and records how each ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.types import Arrival, Plan


@dataclass(frozen=True)
class SeenRow:
    """A ``seen`` row to write with the plans (the ledger's ``mark_seen`` arguments)."""

    arrival: Arrival
    sha256: str | None
    outcome: str


@dataclass
class ArrivalDecision:
    """What one arrival becomes, decided before anything is written: the plans to submit
    (each with the arrival it is for) and the ``seen`` rows to write with them."""

    arrival: Arrival
    plans: list[Plan] = field(default_factory=list)
    seen: list[SeenRow] = field(default_factory=list)
    results: list[tuple[str, bool]] = field(default_factory=list)  # (plan id, created)
    error: BaseException | None = None  # writing it failed: nothing of it was kept


# None: the arrival could not be read (not settled: a redelivery or rescan tries again).
Decision = ArrivalDecision | None
