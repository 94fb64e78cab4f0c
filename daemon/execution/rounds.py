"""Rounds of one output folder: keeping a round under ``rounds/N/``, and retiring it from the top.

A new version of an asset (or an edited sidecar, or an operator's re-run) is a new round of
the same folder, and the manifest describes the latest round. Two moments, crash-safe in
this order:

1. :func:`keep_round`, before the new round's first unit runs: every file of the committed
   round (outputs, posters, the sheet) is *copied* under ``rounds/N/``, with a copy of its
   manifest as ``rounds/N/round.json`` (which version of the source, rule and prompt made
   them). Nothing at the top level changes yet: a round that is held (an environment fault)
   or superseded leaves the folder as it was. A crash in the middle leaves every original in
   place; the next start copies again (the same bytes, or into the next free number).
2. :func:`retire_round`, once the new round's manifest is committed, whether it succeeded or
   failed: each top-level file of the kept round that the new manifest does not list is
   removed, after checking that its copy under ``rounds/N/`` holds the very same bytes (a
   file whose copy is missing or differs is left where it is, with a warning). So the top
   level always matches the manifest beside it, the earlier round stays reachable from that
   manifest (``rounds[].outputs``), and no file is ever lost. A crash before this step leaves
   the plan open; the next start finalizes it again and retires what is left.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import structlog

from daemon.errors import DarkroomError
from daemon.outputs.board import thumb_path_for
from daemon.outputs.manifest import Manifest, RoundSummary
from daemon.sinks.base import Sink

log = structlog.get_logger("darkroom.runner")

__all__ = ["ROUND_RECORD", "keep_round", "retire_round"]

# The kept round's manifest, renamed so that nothing scanning for ``manifest.json`` (the root
# index) takes an earlier round for a folder of its own.
ROUND_RECORD = "round.json"


def keep_round(sink: Sink, manifest_path: str, old: Manifest, old_bytes: bytes) -> RoundSummary:
    """Copy the committed round ``old`` (whose manifest is ``old_bytes``) under rounds/N/."""
    base = str(PurePosixPath(manifest_path).parent)
    present = [p for p in dict.fromkeys([*old.files(), old.sheet]) if p and sink.exists(p)]
    number = len(old.rounds) + 1
    # Never overwrite: a number whose folder already holds other bytes (a hand-made folder,
    # an older daemon's numbering) is skipped. The same bytes are a copy a crash interrupted.
    while _taken(sink, base, number, present, old_bytes):
        number += 1
    # The record first: it claims the number, so a copy a crash interrupted is finished in
    # the same folder on the next try rather than started again in the next one.
    record = f"{base}/rounds/{number}/{ROUND_RECORD}"
    if not sink.exists(record):
        sink.write(record, old_bytes, "application/json")
    kept: dict[str, str] = {}
    for path in present:
        target = _target(base, number, path)
        data = sink.read(path)
        if not (sink.exists(target) and sink.read(target) == data):
            sink.write(target, data, "application/octet-stream")
        kept[target] = path
    sheet = next((t for t, p in kept.items() if p == old.sheet), None)
    return RoundSummary(
        round=number,
        prompt=old.rule.prompt,
        created_at=old.created_at,
        sheet=sheet,
        outputs=[t for t, p in kept.items() if p != old.sheet],
        status=old.status,
        manifest=record,
        source_sha256=old.source.sha256,
        kept_from=kept,
    )


def retire_round(sink: Sink, committed: Manifest, manifest_path: str) -> list[str]:
    """Remove from the top level the files of the round ``committed`` replaced that it does
    not list itself; each only when its kept copy holds the same bytes. Returns the paths
    removed (none when there was no earlier round, or it was kept by an older daemon)."""
    if not committed.rounds:
        return []
    kept = committed.rounds[-1]
    listed = {*committed.files(), committed.sheet, committed.page, manifest_path}
    thumbs = {thumb_path_for(str(o.path)) for o in committed.written() if o.path}
    removed: list[str] = []
    for copy, original in kept.kept_from.items():
        if original in listed or original == copy:
            continue
        try:
            if not sink.exists(original):
                continue  # retired before a crash, or never there
            if not sink.exists(copy) or sink.read(copy) != sink.read(original):
                log.warning(
                    "earlier round's file left in place: its kept copy is missing or differs",
                    path=sink.location(original),
                    copy=sink.location(copy),
                )
                continue
            sink.delete(original)
            removed.append(original)
            thumb = thumb_path_for(original)
            if thumb not in thumbs and sink.exists(thumb):
                sink.delete(thumb)  # its board picture: a view of a file no longer here
        except DarkroomError as exc:  # the next finalize (a restart) tries again
            log.warning("cannot retire an earlier round's file", path=original, reason=str(exc))
    if removed:
        log.info(
            "earlier round moved under rounds/",
            round=kept.round,
            files=len(removed),
            manifest=sink.location(manifest_path),
        )
    return removed


def _target(base: str, number: int, path: str) -> str:
    """Where ``path`` is kept in round ``number``: its place below the folder (subfolders
    too, so equal names in two subfolders stay apart), or its name for a file outside it."""
    pure = PurePosixPath(path)
    try:
        relative = pure.relative_to(base).as_posix()
    except ValueError:
        relative = pure.name
    if relative.startswith("rounds/"):
        relative = pure.name
    return f"{base}/rounds/{number}/{relative}"


def _taken(sink: Sink, base: str, number: int, paths: list[str], old_bytes: bytes) -> bool:
    """Whether rounds/``number``/ already holds something other than this round's bytes."""
    record = f"{base}/rounds/{number}/{ROUND_RECORD}"
    if sink.exists(record):
        return sink.read(record) != old_bytes
    for path in paths:
        target = _target(base, number, path)
        if sink.exists(target) and sink.read(target) != sink.read(path):
            return True
    return False
