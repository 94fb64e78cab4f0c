"""Whether each source and sink can be reached: the verdicts, their changes, and the report file.

    health = PartHealth(build_probes(settings.sources, settings.sinks), on_change=changed)
    health.check_all()                 # on the app's scheduler, every metrics.check_interval
    health.failing()                   # [PartState(part="source:cam", ok=False, error=..., since=...)]
    write_report(state_dir, health.states(), interval=15)   # what `darkroom status` reads

A part that starts failing is logged once as an error (again only when the reason changes),
and once more when it recovers — never every few seconds. ``since`` is when the part last
changed between working and failing, so "failing since 08:41" survives many failed checks.

The report file (``<state_dir>/health.json``, replaced atomically) is how a separate
``darkroom status`` process learns what the running daemon sees; it carries the daemon's
pid so a reader can tell a live report from one a stopped daemon left behind.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from daemon.errors import DarkroomError
from daemon.service.probes import Probe

log = structlog.get_logger("darkroom.health")

__all__ = ["REPORT_NAME", "HealthReport", "PartHealth", "PartState", "read_report", "write_report"]

REPORT_NAME = "health.json"
_unwritable: set[str] = set()  # report paths a write failed for (warned once)


@dataclass(frozen=True)
class PartState:
    """The latest verdict on one source or sink (``part`` is ``source:cam``/``sink:out``)."""

    part: str
    ok: bool | None  # None: not checked yet
    error: str | None = None  # why it fails (None while it works)
    since: float | None = None  # unix time it last changed between ok and failing
    checked_at: float | None = None  # unix time of the latest check
    last_ok_at: float | None = None  # unix time of the latest check that passed
    failures: int = 0  # failed checks since the daemon started

    @property
    def kind(self) -> str:
        return self.part.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.part.split(":", 1)[1]

    @property
    def state(self) -> str:
        return "unchecked" if self.ok is None else "ok" if self.ok else "failing"


class PartHealth:
    """Runs the probes and keeps each part's :class:`PartState`. Thread-safe; never raises."""

    def __init__(
        self,
        probes: Mapping[str, Probe],
        *,
        on_change: Callable[[PartState], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._probes = dict(probes)
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._states = {part: PartState(part, None) for part in self._probes}

    def check_all(self) -> list[PartState]:
        """Check every part once (one after another: each check is bounded by its timeouts)."""
        for part, probe in self._probes.items():
            try:
                probe()
            except DarkroomError as exc:
                self.record(part, str(exc))
            except Exception as exc:  # noqa: BLE001 -- a check must never stop the others
                self.record(part, f"{type(exc).__name__}: {exc}")
            else:
                self.record(part, None)
        return self.states()

    def record(self, part: str, error: str | None) -> PartState:
        """One check's verdict: ``error`` None means the part works."""
        now = self._clock()
        with self._lock:
            old = self._states.get(part, PartState(part, None))
            ok = error is None
            changed = old.ok is not ok
            new = replace(
                old,
                ok=ok,
                error=error,
                since=now if changed else old.since,
                checked_at=now,
                last_ok_at=now if ok else old.last_ok_at,
                failures=old.failures + (0 if ok else 1),
            )
            self._states[part] = new
        if not ok and (changed or error != old.error):
            log.error(
                "cannot reach a source or sink; its work waits until it is fixed",
                part=part,
                reason=error,
            )
        elif ok and old.ok is False:
            log.info(
                "source or sink reachable again",
                part=part,
                failed_for_s=round(now - (old.since or now), 1),
            )
        if changed and self._on_change is not None:
            try:
                self._on_change(new)
            except Exception:  # noqa: BLE001 -- observers must not break the checks
                log.exception("health observer failed", part=part)
        return new

    def states(self) -> list[PartState]:
        with self._lock:
            ordered = sorted(self._states, key=lambda p: (not p.startswith("source:"), p))
            return [self._states[p] for p in ordered]  # sources first, then sinks

    def failing(self) -> list[PartState]:
        return [s for s in self.states() if s.ok is False]

    def seconds_since_ok(self, part: str) -> float:
        """Seconds since ``part`` last passed a check (since the daemon started if never)."""
        with self._lock:
            state = self._states.get(part)
        last = (state.last_ok_at if state else None) or self._started
        return max(0.0, self._clock() - last)


@dataclass(frozen=True)
class HealthReport:
    """What a running daemon last wrote about its sources and sinks."""

    pid: int
    written_at: float
    interval: float  # seconds between checks
    parts: list[PartState]

    @property
    def daemon_running(self) -> bool:
        """Whether the process that wrote this report still runs."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: it exists
            return True
        return True


def write_report(state_dir: Path, parts: list[PartState], *, interval: float) -> None:
    """Replace ``<state_dir>/health.json`` atomically (temp file + rename). Never raises."""
    path = state_dir / REPORT_NAME
    temp = state_dir / f".{REPORT_NAME}.{os.getpid()}.tmp"
    body = {
        "pid": os.getpid(),
        "written_at": time.time(),
        "interval": interval,
        "parts": [asdict(p) for p in parts],
    }
    try:
        temp.write_text(json.dumps(body, indent=2))
        os.replace(temp, path)
    except OSError as exc:
        # Once as a warning (status then shows an old report), later at debug level.
        report = log.debug if str(path) in _unwritable else log.warning
        _unwritable.add(str(path))
        report("cannot write the health report", path=str(path), reason=str(exc))


def read_report(state_dir: Path) -> HealthReport | None:
    """The report a daemon wrote into ``state_dir``, or None when there is none (or it is
    unreadable: a reader never fails because of it)."""
    try:
        data: dict[str, Any] = json.loads((state_dir / REPORT_NAME).read_text())
        return HealthReport(
            pid=int(data["pid"]),
            written_at=float(data["written_at"]),
            interval=float(data.get("interval") or 0.0),
            parts=[PartState(**p) for p in data.get("parts", [])],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
