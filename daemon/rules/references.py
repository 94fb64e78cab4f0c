"""Reference images: a step's ``references:`` globs resolved to files, safely.

A pattern is a glob relative to the rules directory, or ``NAME:glob`` inside the configured
reference folder NAME; nothing may leave its folder (no absolute paths, no ``..``, no
symlinks pointing out).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from daemon.rules.schema import Rule
from daemon.types import ReferenceFile


def resolve_references(
    patterns: list[str], rules_dir: Path, reference_dirs: Mapping[str, Path]
) -> list[Path]:
    """Reference images, sorted: ``glob`` relative to the rules directory, or ``NAME:glob``
    inside the configured reference folder NAME. Symlinks leaving the folder are refused."""
    found: list[Path] = []
    for pattern in patterns:
        base = rules_dir
        name, sep, rest = pattern.partition(":")
        if sep and name in reference_dirs:
            base, pattern = reference_dirs[name], rest
        elif sep and re.fullmatch(r"[A-Za-z0-9_-]+", name) and len(name) > 1:
            configured = ", ".join(reference_dirs) or "none"
            raise ValueError(
                f"reference folder {name!r} is not configured (reference_dirs: {configured})"
            )
        if pattern.startswith("/") or ".." in PurePosixPath(pattern).parts:
            raise ValueError(
                f"reference {pattern!r} must stay inside its folder (no absolute paths or '..')"
            )
        root = base.resolve()
        for path in sorted(base.glob(pattern)):
            if path.is_file() and path.resolve().is_relative_to(root):
                found.append(path)
    return found


def reference_files(
    rule: Rule,
    rules_dir: Path,
    reference_dirs: Mapping[str, Path],
    *,
    hashed: bool = True,
) -> dict[str, list[ReferenceFile]]:
    """Each step's resolved references, by step name (steps without any are left out).

    The hashes are part of a plan's identity (a changed reference image is new work);
    ``hashed=False`` leaves them empty, for ``darkroom match``, which only shows the paths.
    """
    resolved: dict[str, list[ReferenceFile]] = {}
    for step in rule.steps:
        if step.references:
            paths = resolve_references(step.references, rules_dir, reference_dirs)
            resolved[step.name] = [
                ReferenceFile(
                    path=str(path),
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest() if hashed else "",
                )
                for path in paths
            ]
    return resolved
