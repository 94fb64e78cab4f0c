"""Which queued jobs to claim next: fair between rules, sticky to loaded models, in batches.

The ledger stays the queue; this module only decides *which* due job to claim, then claims
it with the same transition as :meth:`Ledger.claim` (queued -> running, attempt counted,
lease owner set), atomically, so another runner can never take the same job.

Fairness: each rule has a virtual time that grows by ``jobs / weight`` as its jobs are
claimed; the rule with the smallest virtual time goes next. A rule that was idle starts at
the current minimum (it cannot save up credit), so a rule with one file waits for at most
one batch of a rule with 10,000 files — never behind its backlog. Weights come from
``worker.priorities``.

Affinity: among the rules within ``slack`` jobs of the minimum, one whose next job uses a
model already loaded on a worker is preferred. That keeps a device on its model through a
burst of ``slack`` jobs instead of swapping models every job, while no rule falls more than
``slack`` jobs behind its fair share.

Batching: companions of a claimed job are other due jobs of the same rule and unit that are
on their first attempt (a job being retried runs alone: it may be the one that crashed the
worker).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from threading import Event

from daemon.queue.ledger import Ledger
from daemon.queue.rows import Candidate, JobRow


def candidates(
    ledger: Ledger, per_rule: int, now: float | None = None
) -> dict[str, list[Candidate]]:
    """The first ``per_rule`` due jobs of every rule, in the ledger's own order."""
    out: dict[str, list[Candidate]] = {}
    for candidate in ledger.due_heads(per_rule, now):
        out.setdefault(candidate.rule, []).append(candidate)
    return out


def claim_ids(ledger: Ledger, owner: str, ids: list[str]) -> list[JobRow]:
    """Claim exactly these jobs if they are still queued (same transition as Ledger.claim)."""
    return ledger.claim_ids(owner, ids)


class FairShare:
    """Virtual-time fair queueing between rules, with a slack for model affinity."""

    def __init__(self, weights: Mapping[str, float] | None = None, slack: float = 4.0):
        self.weights = dict(weights or {})
        self.slack = slack
        self.vtime: dict[str, float] = {}

    def pick(
        self, heads: Mapping[str, Candidate], loaded: Callable[[str | None], bool]
    ) -> str | None:
        """The rule whose head job goes next."""
        if not heads:
            return None
        known = [self.vtime[r] for r in heads if r in self.vtime]
        floor = min(known) if known else 0.0
        for rule in heads:  # idle rules catch up to the floor: no credit for idle time
            self.vtime[rule] = max(self.vtime.get(rule, floor), floor)
        floor = min(self.vtime[r] for r in heads)
        eligible = [r for r in heads if self.vtime[r] <= floor + self.slack]
        return min(eligible, key=lambda r: (not loaded(heads[r].profile), self.vtime[r], r))

    def charge(self, rule: str, jobs: int) -> None:
        self.vtime[rule] = self.vtime.get(rule, 0.0) + jobs / self.weights.get(rule, 1.0)


class Dispatcher:
    """Claims the next batch of jobs for a runner."""

    def __init__(
        self,
        ledger: Ledger,
        owner: str,
        fair: FairShare,
        max_batch: Callable[[str | None], int],
        loaded: Callable[[str | None], bool],
    ):
        self.ledger = ledger
        self.owner = owner
        self.fair = fair
        self.max_batch = max_batch  # profile name -> how many jobs may share a call
        self.loaded = loaded  # profile name -> whether a worker has it loaded

    def claim(self, wait_s: float = 0.0, stopping: Event | None = None) -> list[JobRow]:
        """The next job and up to max_batch - 1 companions; [] when nothing is due.
        ``wait_s``: how long to wait for companions that have not arrived yet."""
        while True:
            per_rule = max(1, self.max_batch(None))
            heads = candidates(self.ledger, per_rule)
            if not heads:
                return []
            rule = self.fair.pick({r: c[0] for r, c in heads.items()}, self.loaded)
            assert rule is not None  # heads is not empty
            head = heads[rule][0]
            limit = self.max_batch(head.profile) if head.attempts == 0 else 1
            ids = [head.id] + [
                c.id for c in heads[rule][1:] if c.unit_id == head.unit_id and c.attempts == 0
            ][: limit - 1]
            claimed = claim_ids(self.ledger, self.owner, ids)
            if not claimed:
                continue  # another runner took them first: look again
            if len(claimed) < limit and wait_s > 0:
                claimed += self._wait_for_companions(head, limit - len(claimed), wait_s, stopping)
            self.fair.charge(rule, len(claimed))
            return claimed

    def _wait_for_companions(
        self, head: Candidate, want: int, wait_s: float, stopping: Event | None
    ) -> list[JobRow]:
        got: list[JobRow] = []
        deadline = time.monotonic() + wait_s
        while len(got) < want and time.monotonic() < deadline:
            if stopping is not None and stopping.is_set():
                break
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
            more = [
                c.id
                for c in candidates(self.ledger, want + 1).get(head.rule, [])
                if c.unit_id == head.unit_id and c.attempts == 0
            ][: want - len(got)]
            got += claim_ids(self.ledger, self.owner, more)
        return got
