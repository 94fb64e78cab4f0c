"""Recording a reviewer's decision on variants: in the manifest, the approval copy, the page.

    decide(sink, manifest_path, variants, action, *, note, by) -> list[Decided]

The one place a decision is made, whoever asks: ``darkroom review approve|reject|star|unstar|
note`` and the review server both call :func:`decide`. An approved variant is copied to
``approved/<the output's own path>`` in the same sink (a rejection removes such a copy); the
manifest's ``decisions`` are rewritten with a conditional write, so a decision never silently
undoes a round the daemon committed meanwhile (or another reviewer's decision): on a conflict
the manifest is read again and the decision applied to the newer one.
"""

from __future__ import annotations

import datetime
import enum
import getpass
import mimetypes
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from daemon.errors import DarkroomError, WriteConflict
from daemon.outputs.manifest import (
    Decision,
    Manifest,
    ManifestError,
    manifest_bytes,
    parse_manifest,
)
from daemon.sinks.base import Sink

__all__ = [
    "Action",
    "Decided",
    "ReviewError",
    "approved_path",
    "decide",
    "load_manifest",
    "resolve_variant",
    "rewrite_manifest",
]

NOTE_MAX_CHARS = 2000  # a note is a sentence or two, shown on pages and sent in webhooks


class ReviewError(DarkroomError):
    """A review request could not be done as asked (the message says why and how to fix it)."""


class Action(enum.StrEnum):
    """What a reviewer can do to a variant."""

    APPROVE = "approve"
    REJECT = "reject"
    STAR = "star"
    UNSTAR = "unstar"
    NOTE = "note"
    REFINE = "refine"  # a note that starts another round on this variant (review/triggers.py)

    @property
    def event(self) -> str:
        """The webhook event type: ``variant.approved``, ``variant.starred``, ..."""
        return (
            "variant."
            + {
                Action.APPROVE: "approved",
                Action.REJECT: "rejected",
                Action.STAR: "starred",
                Action.UNSTAR: "unstarred",
                Action.NOTE: "noted",
                Action.REFINE: "refined",
            }[self]
        )


@dataclass(frozen=True)
class Decided:
    """One variant's decision as recorded, for the ledger, webhooks and the caller."""

    manifest_path: str
    output_path: str
    action: Action
    decision: Decision  # the variant's whole record after this action
    rule: str
    source_key: str
    approved_copy: str | None  # where the approved copy is (approve only)


def load_manifest(data: bytes, where: str) -> Manifest:
    try:
        return parse_manifest(data)
    except ManifestError as exc:
        raise ReviewError(f"{where} is {exc}") from None


def approved_path(output_path: str) -> str:
    """``approved/<the output's own path>``: an approved copy keeps its asset's folder, so two
    sources' variants of the same name never share (or delete) each other's copy."""
    return posixpath.join("approved", output_path)


def resolve_variant(manifest: Manifest, wanted: str, where: str) -> str:
    """The output path in ``manifest`` that ``wanted`` names: the path as written, its file
    name (with or without extension), or a short name such as ``explore-0``."""
    from daemon.outputs.page import short_names

    names = short_names(manifest)
    matches = []
    for step, o in manifest.outputs():
        if not o.path or o.path not in names:
            continue
        name, model = o.step or step.name, o.model or step.model
        base = posixpath.basename(o.path)
        forms = {
            o.path,
            base,
            PurePosixPath(base).stem,
            names[o.path],
            f"{name}-{o.variant}",
            f"{name}-{model}-{o.variant}",
        }
        if wanted in forms and o.path not in matches:
            matches.append(o.path)
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(names.values()) or "none"
    if matches:
        raise ReviewError(f"variant {wanted!r} is ambiguous in {where}; variants: {listing}")
    raise ReviewError(f"no variant {wanted!r} in {where}; variants: {listing}")


def _apply(
    earlier: Decision | None, action: Action, note: str | None, at: str, by: str
) -> Decision:
    fields = earlier.model_dump(exclude_unset=True) if earlier else {}
    fields.update(at=at, by=by)
    if action is Action.APPROVE:
        fields["decision"] = "approved"
    elif action is Action.REJECT:
        fields["decision"] = "rejected"
    elif action in (Action.STAR, Action.UNSTAR):
        fields["starred"] = action is Action.STAR
    if note:  # a note rides along with any action; NOTE alone sets only the note
        fields["note"] = note
    return Decision(**fields)


def decide(
    sink: Sink,
    manifest_path: str,
    variants: list[str],
    action: Action,
    *,
    note: str | None = None,
    by: str | None = None,
    now: datetime.datetime | None = None,
    attempts: int = 20,
    label: str | None = None,
) -> list[Decided]:
    """Apply ``action`` to ``variants`` of the manifest at ``manifest_path`` in ``sink``;
    copy or remove approval copies; republish the page. Raises ReviewError naming what was
    wrong; nothing is written unless every variant resolves. ``label`` names the manifest in
    errors (default: its location; the review server passes ``sink:path``, never a path on
    the server)."""
    from daemon.outputs.page import publish

    if note is not None:
        note = note.strip()
        if len(note) > NOTE_MAX_CHARS:
            raise ReviewError(f"the note is {len(note)} characters; at most {NOTE_MAX_CHARS}")
    if action in (Action.NOTE, Action.REFINE) and not note:
        raise ReviewError(f"{action.value} needs a note (--note TEXT)")
    where = label or sink.location(manifest_path)
    at = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    who = by or _login()
    if not sink.exists(manifest_path):
        raise ReviewError(f"no manifest at {where}")
    first = load_manifest(sink.read(manifest_path), where)
    paths = list(dict.fromkeys(resolve_variant(first, v, where) for v in variants))
    copies = {path: approved_path(path) for path in paths}
    # The approval copies first: a manifest that says "approved" always has its copy.
    for path, copy in copies.items():
        if action is Action.APPROVE:
            sink.write(copy, sink.read(path), _content_type(path))
        elif action is Action.REJECT and sink.exists(copy):
            sink.delete(copy)
    recorded: dict[str, Decision] = {}

    def record(manifest: Manifest) -> Manifest:
        recorded.clear()  # applied to the latest manifest, again after a conflict
        for path in paths:
            recorded[path] = _apply(manifest.decision_for(path), action, note, at, who)
        return manifest.with_decisions(recorded)

    try:
        updated = rewrite_manifest(sink, manifest_path, record, where=where, attempts=attempts)
    except WriteConflict:
        raise ReviewError(
            f"{where} kept changing while the decision was written; try again"
        ) from None
    if updated is None:
        raise ReviewError(f"{where} was removed while the decision was written")
    publish(sink, updated, manifest_path=manifest_path)
    return [
        Decided(
            manifest_path=manifest_path,
            output_path=path,
            action=action,
            decision=recorded[path],
            rule=updated.rule.name or "",
            source_key=updated.source.key or "",
            approved_copy=copies[path] if action is Action.APPROVE else None,
        )
        for path in paths
    ]


def rewrite_manifest(
    sink: Sink,
    manifest_path: str,
    change: Callable[[Manifest], Manifest],
    *,
    where: str,
    attempts: int = 20,
) -> Manifest | None:
    """Read the manifest at ``manifest_path``, ``change`` it and write it back only if nobody
    wrote it meanwhile (a round committed, another reviewer), from the top again when
    someone did. Returns what was written; None when there is no manifest; WriteConflict
    when other writers won ``attempts`` times in a row."""
    for _ in range(attempts):
        version = sink.version(manifest_path)
        if version is None:
            return None
        updated = change(load_manifest(sink.read(manifest_path), where))
        try:
            sink.write_if(
                manifest_path, manifest_bytes(updated), "application/json", replacing=version
            )
        except WriteConflict:
            continue
        return updated
    raise WriteConflict(f"{where}: {attempts} other writers changed it first")


def _content_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
