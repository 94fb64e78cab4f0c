"""The files a rule names — references, masks, watermarks — found safely inside their folder.

A path is relative to the rules directory, or ``NAME:path`` inside the configured reference
folder NAME. Nothing may leave its folder: no absolute paths, no ``..``, no symlink pointing
out. Patterns are templates (``refs/{folder}/*.png``): :mod:`daemon.rules.plan` renders them
per arrival with path-safe values and hands the result to :class:`RuleFiles`, which checks it
again — render, then validate — so a hostile file name cannot steer a read outside.

A rendered path that names nothing and one that would leave its folder get the same message:
a daemon never tells an uploader whether a file outside exists.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from daemon.rules import templates
from daemon.rules.schema import Rule, check_confined
from daemon.types import ReferenceFile


class PathFault(ValueError):
    """A path a rule (or sidecar) names that is not a file inside its folder."""


def split_folder(pattern: str, reference_dirs: Mapping[str, Path]) -> tuple[str | None, str]:
    """``"brand:faces/*.png"`` -> ``("brand", "faces/*.png")``; a plain pattern -> (None, it).
    Split before rendering, so a value cannot pick the folder. A NAME: that is not configured
    raises PathFault naming the ones that are."""
    name, sep, rest = pattern.partition(":")
    if sep and name in reference_dirs:
        return name, rest
    if sep and re.fullmatch(r"[A-Za-z0-9_-]+", name) and len(name) > 1:
        configured = ", ".join(reference_dirs) or "none"
        raise PathFault(
            f"reference folder {name!r} is not configured (reference_dirs: {configured})"
        )
    return None, pattern


@dataclass(frozen=True)
class RuleFiles:
    """Finds the files a rule names in the rules directory and the named reference folders.

    ``hashed=False`` leaves hashes empty (``darkroom match`` shows paths only); otherwise each
    file's sha256 is part of its plan's identity (a changed reference image is new work).
    """

    rules_dir: Path
    reference_dirs: Mapping[str, Path] = field(default_factory=dict)
    hashed: bool = True

    def _base(self, folder: str | None) -> tuple[Path, str]:
        if folder is None:
            return self.rules_dir, "the rules folder"
        return self.reference_dirs[folder], f"reference folder {folder!r}"

    def glob(self, folder: str | None, pattern: str, shown: str) -> list[ReferenceFile]:
        """The files ``pattern`` (rendered) matches in ``folder`` (None: the rules folder),
        sorted; ``shown`` is how the rule wrote it, for messages. Raises PathFault when the
        pattern would leave the folder."""
        base, where = self._base(folder)
        _confined(pattern, shown, where)
        root = base.resolve()
        try:
            hits = sorted(base.glob(pattern))
        except (OSError, ValueError):
            hits = []
        return [
            self._file(path)
            for path in hits
            if path.is_file() and path.resolve().is_relative_to(root)
        ]

    def one(self, folder: str | None, path: str, shown: str, what: str) -> ReferenceFile:
        """The single file ``path`` (rendered) in ``folder``; PathFault when it is not a file
        inside that folder — the same words whether it is missing or outside. A mask that
        is not there yet (inside the folder) is returned with no hash: its job is held
        until it exists."""
        base, where = self._base(folder)
        _confined(path, shown, where, what)
        candidate = base / path
        try:
            inside = candidate.resolve(strict=True).is_relative_to(base.resolve())
        except (OSError, RuntimeError):
            inside = False
        if not inside and what == "mask" and _not_there_yet(candidate, base):
            # A per-photo mask not made yet: the user can add it, so the plan keeps its
            # path and the job is held until it exists (daemon.execution.missing_files).
            return ReferenceFile(path=str(candidate), sha256="")
        if not inside or not candidate.is_file():
            raise PathFault(f"{what} {_shown(path, shown)} is not a file in {where}")
        return self._file(candidate)

    def _file(self, path: Path) -> ReferenceFile:
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if self.hashed else ""
        return ReferenceFile(path=str(path), sha256=digest)


def _not_there_yet(candidate: Path, base: Path) -> bool:
    """Whether ``candidate`` simply does not exist yet, at a place inside ``base``: no
    symlink on the way (dangling or not) leads out of it. Anything else, it is refused."""
    try:
        if candidate.exists() or candidate.is_symlink():
            return False
        return candidate.resolve().is_relative_to(base.resolve())
    except (OSError, RuntimeError):
        return False


def _shown(rendered: str, written: str) -> str:
    return repr(rendered) if rendered == written else f"{rendered!r} (from {written!r})"


def _confined(path: str, shown: str, where: str, what: str = "references") -> None:
    if "\x00" in path or not path.strip():
        raise PathFault(f"{what} {_shown(path, shown)} is not a file in {where}")
    try:
        check_confined(path)
    except ValueError:
        # Not "outside": the same words as a missing file, whatever is out there.
        raise PathFault(f"{what} {_shown(path, shown)} is not a file in {where}") from None


def resolve_references(
    patterns: list[str], rules_dir: Path, reference_dirs: Mapping[str, Path]
) -> list[Path]:
    """Reference images, sorted: ``glob`` relative to the rules directory, or ``NAME:glob``
    inside the configured reference folder NAME. Symlinks leaving the folder are refused.

    For ``darkroom check``: a templated pattern (``refs/{folder}/*.png``) is tried with every
    variable as a wildcard, so it "matches no file" only when no arrival could find one; the
    ``sidecar`` entry is the sidecar's list, known per file.
    """
    found: list[Path] = []
    files = RuleFiles(rules_dir, reference_dirs, hashed=False)
    for pattern in patterns:
        if pattern == "sidecar":
            continue
        try:
            folder, rest = split_folder(pattern, reference_dirs)
            check_confined(rest)
        except ValueError as exc:
            raise ValueError(
                str(exc) if isinstance(exc, PathFault) else f"reference {exc}"
            ) from None
        wild = templates.render(
            rest, {name: "**" if name == "dir" else "*" for name in templates.fields(rest)}
        )
        found += [Path(ref.path) for ref in files.glob(folder, wild, pattern)]
    return found


def reference_files(
    rule: Rule,
    rules_dir: Path,
    reference_dirs: Mapping[str, Path],
    *,
    hashed: bool = True,
) -> RuleFiles:
    """The finder of ``rule``'s files (references, masks, watermarks), which
    :func:`daemon.rules.plan.plan_for` uses per arrival: patterns are templates, so what they
    name is known only once a file's variables are."""
    del rule  # every rule shares the folders; kept so callers need not change
    return RuleFiles(rules_dir, dict(reference_dirs), hashed=hashed)


def unmatched_references(
    rule: Rule, rules_dir: Path, reference_dirs: Mapping[str, Path]
) -> list[tuple[int, int, str]]:
    """The reference patterns of ``rule`` that match no file yet, as (step index, pattern
    index, pattern): a folder not made or not mounted yet, files not copied yet. The user can
    fix that, so the daemon sets the rule aside until they match. A pattern that could never
    match (an unknown ``NAME:``, a path leaving its folder) is not listed: that is a mistake
    in the rule, which :func:`daemon.rules.load.cross_check` reports."""
    unmatched = []
    for i, step in enumerate(rule.steps):
        for j, pattern in enumerate(step.references):
            if pattern == "sidecar":  # known per file
                continue
            try:
                found = resolve_references([pattern], rules_dir, reference_dirs)
            except ValueError:
                continue
            if not found:
                unmatched.append((i, j, pattern))
    return unmatched
