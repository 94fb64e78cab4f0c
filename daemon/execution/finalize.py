"""Closing a plan once all its units have ended: sheet, page, manifest, index, then what follows.

In order: the review sheet, the source preview and review page (views: their failure never
fails the plan), then the manifest — the commit marker, built by
:func:`daemon.outputs.manifest_build.build_manifest` — then the root index, then the ledger closes
the plan. A crash anywhere before the ledger closes it leaves the plan active, and the next
start finalizes it again: a manifest already committed is kept and its publish finished. A plan that
succeeded may move its source (``on_success: move``); one that failed quarantines it,
unless another rule still wants the same file. The hooks hear of the commit (webhooks) and
of the plan's end (settlement, metrics).

Rounds (:mod:`.rounds`): when the plan's folder already holds another plan's outputs (an
edited sidecar, a new version of the file), those are copied under ``rounds/N/`` before the
first unit runs (or at finalize, for a plan that failed before any unit ran), so a re-run
keeps what came before; the manifest lists the earlier rounds. The version of the manifest
found then is noted in the ledger, and the new manifest is written only over that version
(S3: IfMatch; IfNoneMatch when there was none). Once it is committed, done or failed, the
earlier round's files it does not list leave the top level (their copies checked first), so
the folder shows what its manifest says. A plan superseded before it wrote anything (its
input replaced by a newer version) commits nothing: the newer version's round follows.

Several daemons may share a sink: a plan whose manifest another daemon committed is adopted,
not run again, and a manifest write that loses the race keeps the other daemon's manifest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from PIL import Image

from daemon import __version__, faults
from daemon.config.profiles import Profile
from daemon.errors import SUPERSEDED, AlreadyCommitted, DarkroomError, InputChanged
from daemon.execution.rounds import keep_round, retire_round
from daemon.execution.source_cache import DecodedSource, SourceCache
from daemon.hooks import Hooks
from daemon.outputs import sheet
from daemon.outputs.board import update_board, write_thumbs
from daemon.outputs.index import index_entry, update_index
from daemon.outputs.manifest import Manifest, manifest_bytes, parse_manifest
from daemon.outputs.manifest_build import build_manifest
from daemon.outputs.page import write_page
from daemon.outputs.reference_thumbs import with_reference_thumbs
from daemon.outputs.sheet_tiles import TILES
from daemon.queue.ledger import JobRow, Ledger
from daemon.queue.rows import PlanRow
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

    def archive_previous_round(self, plan_id: str, plan: Plan, *, rerun: bool = False) -> None:
        """When this source was processed before by this rule (an edited sidecar, a new
        version of the file), keep the earlier outputs under rounds/N/ instead of
        overwriting them. ``rerun``: an operator re-runs this very plan (``darkroom retry``
        after a committed manifest), so its own committed round is kept too."""
        sink = self.sinks[plan.sink]
        # The manifest this round replaces: its own is written only over that one (S3: IfMatch),
        # so a round another daemon commits meanwhile is never silently replaced.
        version = sink.version(plan.manifest)
        self.ledger.note_prior_manifest(plan_id, version)
        if version is None:
            return
        try:
            old_bytes = sink.read(plan.manifest)
            old = parse_manifest(old_bytes)
        except DarkroomError:
            return
        if old.plan_id is None or (old.plan_id == plan_id and not rerun):
            return
        summary = keep_round(sink, plan.manifest, old, old_bytes)
        self.ledger.note_round(plan_id, [*old.rounds, summary])
        log.info(
            "earlier outputs kept as a previous round",
            rule=plan.rule,
            key=plan.arrival.key,
            round=summary.round,
        )

    # -- after the last unit -------------------------------------------------------------

    def finalize(self, plan_id: str, jobs: list[JobRow]) -> PlanState:
        """Write the sheet, then the manifest (the commit marker), then close the plan."""
        plan_row = self.ledger.plan(plan_id)
        plan = plan_row.plan
        sink = self.sinks[plan.sink]
        status = plan_status(jobs)
        if status is PlanState.FAILED and _superseded(jobs):
            # Its bytes were replaced before anything was written: the newer version is planned
            # on its own and commits the next round. Writing this one would replace the
            # committed round with a record of bytes that are gone (and could win the race
            # against the newer version's manifest). Its record is the ledger's.
            return self._close(plan_id, plan_row, jobs, status)
        if not self.ledger.prior_manifest(plan_id)[0]:
            # No unit ran (the plan failed at submission): its round still replaces the
            # committed one, which is kept under rounds/N/ as before any other new round.
            self.archive_previous_round(plan_id, plan)
            plan_row = self.ledger.plan(plan_id)
        decoded = self._decoded_source(plan_id, plan)
        # The picture the views use (maybe reduced); the manifest records the real size.
        source_image = decoded.rgb if decoded is not None else None
        profiles = self.profiles()
        manifest = build_manifest(
            plan,
            plan_id=plan_id,
            status=status,
            units=jobs,
            model_id=lambda name: profiles[name].model if name in profiles else None,
            rounds=plan_row.rounds,
            created_at=plan_row.created_at,
            source_size=decoded.source_size if decoded is not None else None,
            darkroom_version=__version__,
        )
        # Small copies of the references, in the asset's folder: the sheet and page show them.
        manifest = with_reference_thumbs(sink, plan, manifest)
        manifest = self._write_sheet(plan_id, plan, manifest, sink, source_image)
        # The board's pictures, from the sheet's tiles (no second decode); views, like the page.
        write_thumbs(sink, manifest, lambda path: _open_for_sheet(path, sink, source_image))
        try:  # before the manifest: a committed manifest always has its page beside it
            write_page(sink, manifest, manifest_path=plan.manifest, source_image=source_image)
        except Exception:  # the page is a view too: never fail the plan for it
            log.exception("review page failed", plan=plan_id)
        faults.point("after-page")
        committed, wrote = self._commit_manifest(plan_id, plan, manifest, sink)
        faults.point("after-manifest")
        if committed is not None:
            # The top level now matches this manifest: the earlier round's files that it
            # does not list are left only under rounds/N/ (also after a failed round).
            retire_round(sink, committed, plan.manifest)
            try:  # after the manifest: the index lists committed rounds only
                update_index(sink, index_entry(committed, manifest_path=plan.manifest))
            except Exception:
                log.exception("root index update failed", plan=plan_id)
            try:
                update_board(sink, committed, plan.manifest)
            except Exception:
                log.exception("board update failed", plan=plan_id)
            if wrote:
                self.hooks.plan_committed(sink, committed, plan.manifest)
        return self._close(plan_id, plan_row, jobs, status)

    def _close(
        self, plan_id: str, plan_row: PlanRow, jobs: list[JobRow], status: PlanState
    ) -> PlanState:
        """Close the plan in the ledger, then settle its source (move or quarantine)."""
        plan = plan_row.plan
        sink = self.sinks[plan.sink]
        self.ledger.finish_plan(plan_id, status)
        self.source_cache.drop(plan_id)
        if status in (PlanState.DONE, PlanState.PARTIAL):
            # Processed after all (a fixed sidecar re-admitted it): no longer quarantined.
            self.ledger.clear_quarantine(plan_row.source, plan_row.key, plan.sha256)
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

    def _commit_manifest(
        self, plan_id: str, plan: Plan, manifest: Manifest, sink: Sink
    ) -> tuple[Manifest | None, bool]:
        """Write the manifest over the one this round replaces (the version noted when the
        previous round was archived). Returns the manifest now committed for this plan and
        whether this call wrote it; (None, False) when another daemon committed another round
        of the source in between (its manifest is kept, and its page put back)."""
        known, replacing = self.ledger.prior_manifest(plan_id)
        if not known:  # no unit ran here (a plan that failed at submission), or an older ledger
            replacing = sink.version(plan.manifest)
        try:
            sink.write_manifest(plan.manifest, manifest_bytes(manifest), replacing=replacing)
            return manifest, True
        except AlreadyCommitted:
            pass
        try:
            committed = parse_manifest(sink.read(plan.manifest))
        except DarkroomError:
            return None, False
        if committed.plan_id == plan_id:
            # Committed before a crash (or by another daemon running this very plan): what is
            # left is to finish publishing it.
            log.info("this round was committed already; finishing its publish", plan=plan_id)
            return committed, False
        log.info(
            "another daemon already committed this source; keeping its manifest",
            rule=plan.rule,
            key=plan.arrival.key,
        )
        try:
            write_page(sink, committed, manifest_path=plan.manifest)
        except Exception:
            log.exception("review page failed", plan=plan_id)
        return None, False

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
            sink.write(plan.sheet, sheet.encode_sheet(sheet_image), "image/png")
        except Exception as exc:  # a sheet is a view; its failure must not lose the results
            log.exception("review sheet failed", plan=plan_id)
            return manifest.without_sheet(str(exc))
        return manifest

    def _decoded_source(self, plan_id: str, plan: Plan) -> DecodedSource | None:
        try:
            return self.source_cache.get(plan_id, plan)
        except DarkroomError:
            return None

    def _move_source(self, plan: Plan) -> None:
        arrival = plan.arrival
        source = self.sources.get(arrival.source)
        target = f"{plan.processed_dir.strip('/')}/{arrival.key}"
        try:
            moved = source is not None and source.move(arrival.key, target, sha256=plan.sha256)
        except InputChanged as exc:
            # Saved over while it ran: that version is processed (and moved) on its own.
            log.info("not moved: a newer version is at its name", key=arrival.key, reason=str(exc))
            return
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
        if _superseded(jobs):
            # Its input (or a companion) changed: the new version is planned on its own and
            # these bytes are not bad; nothing is put aside.
            log.info("not quarantined: a newer version is planned", key=arrival.key)
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
        fault = plan.sidecar.fault if plan.sidecar else None
        if fault:
            # The image is fine, its sidecar is not: the image stays where it is, so that
            # saving a fixed sidecar runs it again (the record goes once it is done).
            record["reason"] = f"{fault} (the image stays in place; fix the sidecar to run it)"
        elif source is not None:
            try:
                location = source.quarantine(arrival.key, record, plan.quarantine)
            except InputChanged as exc:
                # A newer version is at that name: it is processed on its own; these bytes
                # are gone, so there is nothing to quarantine (the plan's failure says why).
                log.info(
                    "not quarantined: a newer version replaced it", key=arrival.key, reason=str(exc)
                )
                return
            except DarkroomError as exc:
                # The quarantine folder is refused (a symlink, another user's) or failing:
                # the input stays where it is; its record says so (docs/security.md).
                log.warning("cannot quarantine", key=arrival.key, reason=str(exc))
                record["reason"] = f"{record['reason']} (kept in place: {exc})"
        self.ledger.record_quarantine(
            arrival.source, arrival.key, plan.sha256, record["reason"], location
        )
        log.warning(
            "input quarantined" if location else "input failed; kept in place",
            source=arrival.source,
            key=arrival.key,
            rule=plan.rule,
            reason=record["reason"],
            location=location,
        )


def _superseded(jobs: list[JobRow]) -> bool:
    """Whether a newer version of the input (or a companion) ended one of these jobs."""
    return any(j.error and j.error.startswith(SUPERSEDED) for j in jobs)


def _open_for_sheet(path: str, sink: Sink, source_image: Image.Image | None) -> Image.Image:
    if path == "source":
        if source_image is not None:
            return source_image
        return Image.new("RGB", (64, 64), (96, 96, 96))
    kept = TILES.get(sink.name, path)  # written by this process: no read, no decode
    if kept is not None:
        return kept
    return sheet.thumbnail(sink.read(path), sheet.TILE)  # decoded no larger than its tile
