"""Companions: the images that go to a model with the arriving one (``product.jpg`` +
``product.scene.jpg``), found next to it when it is planned.

A rule's ``companions:`` names each one with a path template relative to the arriving file's
folder (``{stem}.scene.jpg``; a glob such as ``*.jpg`` takes the folder's other images, at
most ``max``). Values enter the template path-safe and glob-escaped, so a file name cannot
widen the pattern or leave the folder.

When a group is complete: when the arriving file and every *required* companion are there.
Whichever settles last starts the group: a photo whose companion is missing waits (its
``seen`` record says for what), and a companion that arrives, or changes, plans its photo
again (:func:`photos_of`). Every companion's hash is part of the plan's identity, so a changed
companion is a new round of the photo's folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from daemon.rules import globs, templates
from daemon.rules.match import judge
from daemon.rules.plan import path_safe, source_variables
from daemon.rules.schema import IMAGE_GLOBS, Rule, is_brief
from daemon.rules.sidecars import is_sidecar
from daemon.types import Arrival, CompanionFile

_GLOB_CHARS = ("*", "?", "[")


@dataclass
class Found:
    """The companions of one arrival under one rule: the files by companion name, and what
    is missing (one line per required companion not there yet)."""

    files: dict[str, list[CompanionFile]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def patterns(rule: Rule, arrival: Arrival) -> dict[str, str]:
    """Companion name -> the key (or key glob) it names for ``arrival``, in its folder."""
    variables = source_variables(rule, arrival)
    safe = {k: _escaped(path_safe(v, keep_slashes=k == "dir")) for k, v in variables.items()}
    folder = str(PurePosixPath(arrival.key).parent)
    prefix = "" if folder == "." else folder + "/"
    return {
        name: prefix + templates.render(companion.path, safe)
        for name, companion in rule.companions.items()
    }


def find(
    rule: Rule,
    arrival: Arrival,
    names: Iterable[str] | None,
    read: Callable[[str], bytes | None],
) -> Found:
    """The companions of ``arrival``: ``names`` are the keys in its folder (None when the
    source cannot list: then only exact names are looked for), ``read`` gives a key's bytes
    (None when it is not there)."""
    found = Found()
    listed = sorted(names) if names is not None else None
    for name, pattern in patterns(rule, arrival).items():
        companion = rule.companions[name]
        if _is_glob(pattern):
            if listed is None:
                found.missing.append(
                    f"companion {name!r} ({companion.path}) is a glob, and source"
                    f" {arrival.source!r} cannot list folders: name the file exactly"
                )
                continue
            keys = [
                k
                for k in listed
                if k != arrival.key and _candidate(k) and globs.match_any(["/" + pattern], k)
            ][: companion.max]
        else:
            exact = _unescaped(pattern)
            keys = [exact] if exact != arrival.key else []
        files = []
        for key in keys:
            data = read(key)
            if data is not None:
                files.append(CompanionFile(name=name, key=key, sha256=_sha256(data)))
        if files:
            found.files[name] = files
        elif companion.required:
            found.missing.append(
                f"companion {name!r} ({pattern}) has not arrived next to {arrival.key}"
            )
    return found


def photos_of(
    rule: Rule, key: str, source: str, names: Iterable[str], *, any_source: bool = False
) -> list[str]:
    """The keys in ``names`` (the arriving ``key``'s folder) whose companions under ``rule``
    include ``key``: the photos to plan again now that ``key`` arrived or changed."""
    if not rule.companions:
        return []
    out = []
    for other in sorted(names):
        if other == key or not _candidate(other):
            continue
        arrival = Arrival(source, other, other, 0, 0)
        if not judge(rule, arrival, None, True, any_source=any_source, shallow=True).matched:
            continue
        for pattern in patterns(rule, arrival).values():
            if _is_glob(pattern):
                if globs.match_any(["/" + pattern], key):
                    out.append(other)
                    break
            elif _unescaped(pattern) == key:
                out.append(other)
                break
    return out


def folder_keys(source: object, key: str) -> list[str] | None:
    """The keys in ``key``'s folder, when ``source`` can list folders (None otherwise)."""
    lister = getattr(source, "folder_names", None)
    if lister is None:
        return None
    folder = key.rpartition("/")[0]
    names = lister(folder)
    if names is None:
        return None
    prefix = folder + "/" if folder else ""
    return sorted(prefix + name for name in names)


def _candidate(key: str) -> bool:
    """An image that can be a companion (or a photo): not a sidecar, mask or brief."""
    return not is_sidecar(key) and not is_brief(key) and globs.match_any(IMAGE_GLOBS, key)


def _is_glob(pattern: str) -> bool:
    # Escaped values are "[*]": a glob only when the rule's own template has a wildcard.
    stripped = pattern.replace("[*]", "").replace("[?]", "").replace("[[]", "")
    return any(c in stripped for c in _GLOB_CHARS)


def _escaped(value: object) -> object:
    if not isinstance(value, str):
        return value
    return "".join(f"[{c}]" if c in "*?[" else c for c in value)


def _unescaped(pattern: str) -> str:
    return pattern.replace("[*]", "*").replace("[?]", "?").replace("[[]", "[")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
