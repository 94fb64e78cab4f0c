"""Plan files: finding the references, mask and watermark one arrival's templates name.

A rule's file templates (``refs/{folder}/*.png``) are rendered with the arrival's values made
path-safe and glob-escaped, so a hostile name can neither widen a glob nor leave a folder;
the files are found through the :class:`~daemon.rules.references.RuleFiles` finder, confined
to their folders. Every fault is collected for the plan's error and every hash kept for its
content identity. Used by :func:`daemon.rules.plan.plan_for`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from daemon.rules import templates
from daemon.rules.plan_paths import path_safe
from daemon.rules.references import PathFault, RuleFiles, split_folder
from daemon.rules.schema import SIDECAR_REFERENCES, Rule, Step
from daemon.rules.sidecars import Sidecar
from daemon.types import ReferenceFile


def _glob_escaped(value: Any) -> Any:
    """A value put into a glob pattern as itself: ``*``, ``?`` and ``[`` match only
    themselves (a file named ``*.png`` must not widen ``refs/{stem}/*.png``)."""
    if not isinstance(value, str):
        return value
    return "".join(f"[{c}]" if c in "*?[" else c for c in value)


class _Finder:
    """The files one arrival's templates name (references, mask, watermark), through the
    :class:`RuleFiles` finder: rendered with path-safe values, then confined. Every fault is
    collected (the plan's error) and every hash kept (the plan's content identity)."""

    def __init__(
        self,
        rule: Rule,
        files: RuleFiles | Mapping[str, list[ReferenceFile]] | None,
        sidecar: Sidecar | None,
        variables: Mapping[str, Any],
    ):
        self.rule = rule
        self.files = files
        self.sidecar_references: list[str] = list(getattr(sidecar, "references", None) or [])
        self.listed_by = "sidecar"  # who listed sidecar_references ("brief" for a brief row)
        self.variables = variables
        self.errors: list[str] = []
        self.hashes: list[str] = []

    @functools.cached_property
    def safe(self) -> dict[str, Any]:
        """The variables as path pieces (made only for a rule that names a file)."""
        return {k: path_safe(v, keep_slashes=k == "dir") for k, v in self.variables.items()}

    def _where(self, step: Step) -> str:
        return f"rule {self.rule.name!r} step {step.name!r}"

    def _render(self, step: Step, template: str, what: str, glob: bool) -> str | None:
        values = {k: _glob_escaped(v) for k, v in self.safe.items()} if glob else self.safe
        try:
            return templates.render(template, values)
        except templates.TemplateError as exc:
            self.errors.append(f"{self._where(step)}: {what} {template!r}: {exc}")
            return None

    def references(self, step: Step, *, brief_references: bool = False) -> list[ReferenceFile]:
        found: list[ReferenceFile] = []
        if isinstance(self.files, Mapping):  # resolved by the caller (static patterns)
            found = list(self.files.get(step.name, []))
            self.hashes += [f.sha256 for f in found]
            return found
        patterns = list(step.references)
        if brief_references and self.sidecar_references and SIDECAR_REFERENCES not in patterns:
            patterns.append(SIDECAR_REFERENCES)  # a brief row's references go to its steps
        for pattern in patterns:
            listed = self.sidecar_references if pattern == SIDECAR_REFERENCES else [pattern]
            what = f"{self.listed_by} references" if pattern == SIDECAR_REFERENCES else "references"
            for written in listed:
                try:  # the folder is chosen before rendering: no value can pick it
                    folder, rest = split_folder(written, self._dirs)
                except PathFault as exc:
                    self.errors.append(f"{self._where(step)}: {exc}")
                    continue
                # A sidecar's list is literal text (as a .txt sidecar is), not a template.
                from_sidecar = pattern == SIDECAR_REFERENCES
                rendered = rest if from_sidecar else self._render(step, rest, what, glob=True)
                if rendered is not None:
                    found += self._glob(step, folder, rendered, written, what)
        self.hashes += [f.sha256 for f in found]
        return found

    @property
    def _dirs(self) -> Mapping[str, Any]:
        return self.files.reference_dirs if isinstance(self.files, RuleFiles) else {}

    def _glob(
        self, step: Step, folder: str | None, pattern: str, shown: str, what: str
    ) -> list[ReferenceFile]:
        if not isinstance(self.files, RuleFiles):
            self.errors.append(f"{self._where(step)}: {what}: no rules folder to look in")
            return []
        written = shown.partition(":")[2] if folder else shown
        try:
            found = self.files.glob(folder, pattern, written)
        except PathFault as exc:
            self.errors.append(f"{self._where(step)}: {exc}")
            return []
        if not found:
            shown_as = repr(pattern) if pattern == written else f"{pattern!r} (from {written!r})"
            where = f"reference folder {folder!r}" if folder else "the rules folder"
            self.errors.append(
                f"{self._where(step)}: {what} {shown_as} match no file in {where}"
                " (add the files, then drop the photo again or `darkroom reprocess`)"
            )
        return found

    def one(self, step: Step, template: str, what: str) -> str | None:
        """The file a mask or watermark template names for this arrival (its path), or None
        with the fault recorded."""
        if not isinstance(self.files, RuleFiles):
            self.errors.append(f"{self._where(step)}: {what} {template!r}: no rules folder")
            return None
        try:
            folder, rest = split_folder(template, self.files.reference_dirs)
        except PathFault as exc:
            self.errors.append(f"{self._where(step)}: {exc}")
            return None
        rendered = self._render(step, rest, what, glob=False)
        if rendered is None:
            return None
        try:
            found = self.files.one(folder, rendered, template, what)
        except PathFault as exc:
            self.errors.append(f"{self._where(step)}: {exc}")
            return None
        self.hashes.append(found.sha256)
        return found.path

    def identity(self, extra: str | None) -> str | None:
        """The content identity's extra part: the sidecar mask's hash and every found file's
        (unchanged for a plan that names no file, so older plans keep their identity)."""
        if not self.hashes:
            return extra
        return "\0".join([extra or "", *self.hashes])
