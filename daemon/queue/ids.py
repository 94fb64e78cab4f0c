"""The ledger's ids: a plan's (asset + content + rule + digest), a job's (plan + unit), and
the plan id older ledgers used."""

from __future__ import annotations

import hashlib

__all__ = ["job_id", "legacy_plan_id", "plan_id"]


def plan_id(content: str, rule: str, digest: str, source: str, key: str) -> str:
    """A plan's id: the asset (source, key), its content, the rule and the rule's digest. The
    same bytes at another path are another asset, so they get a plan (and outputs) of their own."""
    asset = f"{source}\0{key}"
    return hashlib.sha256(f"{content}\0{rule}\0{digest}\0{asset}".encode()).hexdigest()[:24]


def legacy_plan_id(content: str, rule: str, digest: str) -> str:
    """The id ledgers written before 0.x gave a plan (no asset in it): still recognised, so an
    unchanged file is not run again after an upgrade."""
    return hashlib.sha256(f"{content}\0{rule}\0{digest}".encode()).hexdigest()[:24]


def job_id(plan: str, unit_id: str) -> str:
    return hashlib.sha256(f"{plan}\0{unit_id}".encode()).hexdigest()[:24]
