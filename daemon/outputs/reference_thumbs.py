"""Small copies of a plan's reference images in its own output folder, for pages and sheets.

    reference_thumb_path(manifest_path, sha256) -> str        <folder>/refs/<sha256[:16]>.webp
    with_reference_thumbs(sink, plan, manifest) -> Manifest   written, and listed in the manifest

A step's references live in the rules folder (or a configured reference folder) on the
server: a page served from a bucket or opened on a laptop cannot show them, and must never
name where they are. The finalizer copies each one, at most :data:`REFERENCE_SIDE` px, into the
asset's folder (named by content, so two references called ``logo.png`` stay two) and records
``manifest.reference_thumbs`` (reference path -> sink path). Views only: a reference that
cannot be read is left out (the page and sheet then show its name alone), never failing the plan.
"""

from __future__ import annotations

import io
import posixpath
from pathlib import Path

import structlog

from daemon.outputs.manifest import Manifest
from daemon.outputs.thumbnails import thumbnail
from daemon.sinks.base import Sink
from daemon.types import Plan, ReferenceFile

__all__ = ["REFERENCE_SIDE", "reference_thumb_path", "with_reference_thumbs"]

log = structlog.get_logger("darkroom.review")

REFERENCE_SIDE = 256  # a sheet tile at the default size; a page shows them at 96 px
QUALITY = 80


def reference_thumb_path(manifest_path: str, sha256: str) -> str:
    """Where the small copy of the reference with content ``sha256`` goes, in the folder of
    the manifest at ``manifest_path``."""
    return posixpath.join(posixpath.dirname(manifest_path), "refs", f"{sha256[:16]}.webp")


def _references(plan: Plan) -> list[ReferenceFile]:
    return list({r.path: r for unit in plan.units for r in unit.references}.values())


def _write(sink: Sink, ref: ReferenceFile, target: str) -> None:
    small = thumbnail(Path(ref.path).read_bytes(), REFERENCE_SIDE)
    buffer = io.BytesIO()
    small.save(buffer, "WEBP", quality=QUALITY, method=2)
    sink.write(target, buffer.getvalue(), "image/webp")


def with_reference_thumbs(sink: Sink, plan: Plan, manifest: Manifest) -> Manifest:
    """``manifest`` listing the small copies of ``plan``'s references, written into its folder
    (the same manifest when the plan has none)."""
    thumbs: dict[str, str] = {}
    for ref in _references(plan):
        if not ref.sha256:
            continue
        target = reference_thumb_path(plan.manifest, ref.sha256)
        try:
            if not sink.exists(target):  # named by content: already there is already right
                _write(sink, ref, target)
            thumbs[ref.path] = target
        except Exception as exc:  # a view: the page shows the reference's name alone
            log.warning(
                "reference picture failed", reference=posixpath.basename(ref.path), error=str(exc)
            )
    if not thumbs:
        return manifest
    return manifest.model_copy(update={"reference_thumbs": thumbs})
