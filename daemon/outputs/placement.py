"""Output ownership: which part of a sink an asset's plan writes into, and where a second asset
goes when that part already belongs to another one (pure path arithmetic).

An asset is (source, key). Its **owned folder** is the folder of its manifest
(``explore/shoots/hero.jpg`` for ``explore/shoots/hero.jpg/manifest.json``); a manifest that is
not named ``manifest.json`` (a flat layout, ``explore/hero-manifest.json``) owns just its own
path. The ledger records the owner of every folder (``daemon.queue.ledger``); when a plan of
another asset asks for an owned folder it is placed in :func:`alternative` instead — the same
name plus ``-`` and 6 hex characters of sha256(source/key), so the choice is deterministic,
readable next to the original, and the same on every daemon.
"""

from __future__ import annotations

import hashlib
import posixpath

from daemon.types import Placement, Plan

__all__ = ["alternative", "owned_folder", "place"]

MANIFEST_NAME = "manifest.json"


def owned_folder(manifest_path: str) -> str:
    """The part of the sink a plan with this manifest owns."""
    folder, name = posixpath.split(manifest_path)
    return folder if name == MANIFEST_NAME and folder else manifest_path


def asset_tag(source: str, key: str) -> str:
    """6 hex characters that tell assets apart in an alternative folder's name."""
    return hashlib.sha256(f"{source}/{key}".encode()).hexdigest()[:6]


def alternative(manifest_path: str, source: str, key: str, attempt: int = 0) -> str:
    """The owned part an asset gets when the one ``manifest_path`` asks for belongs to another:
    ``r/hero.jpg`` -> ``r/hero.jpg-1a2b3c``; a flat ``r/x-manifest.json`` ->
    ``r/x-manifest-1a2b3c.json``. ``attempt`` > 0 (that name is taken too, which takes a hash
    collision) adds ``-N``."""
    tag = asset_tag(source, key) + (f"-{attempt}" if attempt else "")
    owned = owned_folder(manifest_path)
    if owned == manifest_path:  # a flat layout: the manifest file itself is what is owned
        stem, ext = posixpath.splitext(owned)
        return f"{stem}-{tag}{ext}"
    return f"{owned}-{tag}"


def place(plan: Plan, folder: str, owner: tuple[str, str]) -> Plan:
    """``plan`` moved into ``folder`` because its requested one belongs to ``owner``."""
    requested = owned_folder(plan.manifest)
    placement = Placement(
        requested=requested,
        folder=folder,
        reason=f"{requested} belongs to {owner[0]}:{owner[1]}",
    )
    return plan.model_copy(
        update={
            "placed": placement,
            "manifest": placement.apply(plan.manifest),
            "sheet": placement.apply(plan.sheet),
        }
    )
