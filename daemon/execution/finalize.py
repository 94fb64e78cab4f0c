"""Closing a plan once all its units have ended: manifest, sheet, page, then what follows.

In order: the review sheet, then the manifest — the commit marker, built by
:func:`daemon.outputs.manifest.build_manifest` — then the review page and the root index
(views: their failure never fails the plan), then the ledger closes the plan. A plan that
succeeded may move its source (``on_success: move``); one that failed quarantines it,
unless another rule still wants the same file. The hooks hear of the commit (webhooks) and
of the plan's end (settlement, metrics).

Rounds: when the plan's folder already holds another plan's outputs (an edited sidecar, a
new version of the file), those are copied under ``rounds/N/`` before the first unit runs,
so a re-run keeps what came before; the manifest lists the earlier rounds.

Several daemons may share a sink: a plan whose manifest another daemon committed is adopted,
not run again, and a manifest write that loses the race keeps the other daemon's manifest.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

import structlog
from PIL import Image

from daemon import __version__, faults
from daemon.config.profiles import Profile
from daemon.errors import AlreadyCommitted, DarkroomError
from daemon.execution.source_cache import SourceCache
from daemon.hooks import Hooks
from daemon.outputs import sheet
from daemon.outputs.manifest import (
    Manifest,
    RoundSummary,
    build_manifest,
    manifest_bytes,
    parse_manifest,
)
from daemon.outputs.page import publish
from daemon.queue.ledger import JobRow, Ledger
from daemon.sinks.base import Sink
from daemon.sources.base import Source
from daemon.types import JobState, Plan, PlanState

log = structlog.get_logger("darkroom.runner")

__all__ = ["Finalizer", "plan_status"]


def plan_status(jobs: list[JobRow]) -> PlanState:
    """Done when every unit is done, failed when none is, partial in between."""
    states = {j.state for j in jobs}
    if states == {JobState.DONE}:
        return PlanState.DONE
    if JobState.DONE not in states:
        return PlanState.FAILED
    return PlanState.PARTIAL


class Finalizer:
    """Writes a finished plan's sheet, manifest and page, and settles its source."""

    def __init__(
        self,
        ledger: Ledger,
        sources: Mapping[str, Source],
        sinks: Mapping[str, Sink],
        profiles: Callable[[], Mapping[str, Profile]],
        source_cache: SourceCache,
        hooks: Hooks,
    ):
        self.ledger = ledger
        self.sources = sources
        self.sinks = sinks
        self.profiles = profiles  # a callable: a reload swaps the runner's profiles
        self.source_cache = source_cache
        self.hooks = hooks

    # -- before the first unit -----------------------------------------------------------

    def committed_elsewhere(self, plan_id: str, plan: Plan) -> bool:
        """Whether another daemon sharing this sink already committed this very plan."""
        sink = self.sinks[plan.sink]
        try:
            if not sink.exists(plan.manifest):
                return False
            return parse_manifest(sink.read(plan.manifest)).plan_id == plan_id
        except DarkroomError:
            return False

    def archive_previous_round(self, plan_id: str, plan: Plan) -> None:
        """When this source was processed before by this rule (an edited sidecar, a new
        version of the file), keep the earlier outputs under rounds/N/ instead of
        overwriting them."""
        sink = self.sinks[plan.sink]
        if not sink.exists(plan.manifest):
            return
        try:
            old = parse_manifest(sink.read(plan.manifest))
        except DarkroomError:
            return
        if old.plan_id in (None, plan_id):
            return
        number = len(old.rounds) + 1
        base = str(PurePosixPath(plan.manifest).parent)
        moved: dict[str, str] = {}
        for path in [*old.files(), old.sheet]:
            if not path or not sink.exists(path):
                continue
            target = f"{base}/rounds/{number}/{PurePosixPath(path).name}"
            sink.write(target, sink.read(path), "application/octet-stream")
            moved[path] = target
        summary = RoundSummary(
            round=number,
            prompt=old.rule.prompt,
            created_at=old.created_at,
            sheet=moved.get(old.sheet) if old.sheet else None,
            outputs=list(moved.values()),
        )
        self.ledger.note_round(plan_id, [*old.rounds, summary])
        log.info(
            "earlier outputs kept as a previous round",
            rule=plan.rule,
            key=plan.arrival.key,
            round=number,
        )

    # -- after the last unit -------------------------------------------------------------

    def finalize(self, plan_id: str, jobs: list[JobRow]) -> PlanState:
        """Write the sheet, then the manifest (the commit marker), then close the plan."""
        plan_row = self.ledger.plan(plan_id)
        plan = plan_row.plan
        sink = self.sinks[plan.sink]
        status = plan_status(jobs)
        source_image = self._source_thumbnail(plan_id, plan)
        profiles = self.profiles()
        manifest = build_manifest(
            plan,
            plan_id=plan_id,
            status=status,
            units=jobs,
            model_id=lambda name: profiles[name].model if name in profiles else None,
            rounds=plan_row.rounds,
            created_at=plan_row.created_at,
            source_size=source_image.size if source_image is not None else None,
            darkroom_version=__version__,
        )
        manifest = self._write_sheet(plan_id, plan, manifest, sink, source_image)
        try:
            sink.write_manifest(plan.manifest, manifest_bytes(manifest))
        except AlreadyCommitted:
            log.info(
                "another daemon already committed this source; keeping its manifest",
                rule=plan.rule,
                key=plan_row.key,
            )
        else:
            try:
                publish(sink, manifest, manifest_path=plan.manifest, source_image=source_image)
            except Exception:  # the page is a view too: never fail the plan for it
                log.exception("review page failed", plan=plan_id)
            self.hooks.plan_committed(sink, manifest, plan.manifest)
        faults.point("after-manifest")
        self.ledger.finish_plan(plan_id, status)
        self.source_cache.drop(plan_id)
        if status is PlanState.DONE and plan.on_success == "move":
            self._move_source(plan)
        elif status is PlanState.FAILED:
            self._quarantine(plan_id, plan, jobs)
        log.info(
            "source finished",
            rule=plan.rule,
            source=plan_row.source,
            key=plan_row.key,
            status=status.value,
            manifest=sink.location(plan.manifest),
        )
        self.hooks.plan_finished(plan_id, status)
        return status

    def _write_sheet(
        self,
        plan_id: str,
        plan: Plan,
        manifest: Manifest,
        sink: Sink,
        source_image: Image.Image | None,
    ) -> Manifest:
        """Render and write the review sheet; the manifest without it when that fails."""
        try:
            sheet_image = sheet.render_sheet(
                manifest, lambda path: _open_for_sheet(path, sink, source_image)
            )
            buffer = io.BytesIO()
            sheet_image.save(buffer, "PNG", compress_level=3)
            sink.write(plan.sheet, buffer.getvalue(), "image/png")
        except Exception as exc:  # a sheet is a view; its failure must not lose the results
            log.exception("review sheet failed", plan=plan_id)
            return manifest.without_sheet(str(exc))
        return manifest

    def _source_thumbnail(self, plan_id: str, plan: Plan) -> Image.Image | None:
        try:
            return self.source_cache.get(plan_id, plan).rgb
        except DarkroomError:
            return None

    def _move_source(self, plan: Plan) -> None:
        arrival = plan.arrival
        source = self.sources.get(arrival.source)
        target = f"{plan.processed_dir.strip('/')}/{arrival.key}"
        try:
            moved = source is not None and source.move(arrival.key, target)
        except DarkroomError as exc:
            log.warning("cannot move source after success", key=arrival.key, reason=str(exc))
            return
        if moved:
            log.info("source moved after success", key=arrival.key, to=target)
        else:
            log.warning(
                "this source cannot move files; on_success: move ignored", source=arrival.source
            )

    def _quarantine(self, plan_id: str, plan: Plan, jobs: list[JobRow]) -> None:
        """A failed input goes to quarantine with its reason — unless another rule still
        wants the same file (its plan is running or succeeded)."""
        arrival = plan.arrival
        if self.ledger.others_want(plan_id, arrival.source, arrival.key, plan.sha256):
            return
        reasons = [
            {"step": j.unit_id, "error": j.error, "attempts": j.attempts} for j in jobs if j.error
        ]
        record: dict[str, Any] = {
            "source": arrival.source,
            "key": arrival.key,
            "sha256": plan.sha256,
            "rule": plan.rule,
            "reason": reasons[0]["error"] if reasons else "failed",
            "steps": reasons,
            "attempts": max((j.attempts for j in jobs), default=0),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        location = None
        source = self.sources.get(arrival.source)
        if source is not None:
            try:
                location = source.quarantine(arrival.key, record, plan.quarantine)
            except DarkroomError as exc:
                log.warning("cannot quarantine", key=arrival.key, reason=str(exc))
        self.ledger.record_quarantine(
            arrival.source, arrival.key, plan.sha256, record["reason"], location
        )
        log.warning(
            "input quarantined",
            source=arrival.source,
            key=arrival.key,
            rule=plan.rule,
            reason=record["reason"],
            location=location,
        )


def _open_for_sheet(path: str, sink: Sink, source_image: Image.Image | None) -> Image.Image:
    if path == "source":
        if source_image is not None:
            return source_image
        return Image.new("RGB", (64, 64), (96, 96, 96))
    return sheet.thumbnail(sink.read(path), 512)
