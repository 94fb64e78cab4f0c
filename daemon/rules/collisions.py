"""Can two inputs a rule admits ask for the same output folder? (``darkroom check`` warns.)

An output folder belongs to one input (:mod:`daemon.outputs.placement`); when two inputs'
templates render to the same folder, the second is placed beside the first with a hash in its
name — safe, but not where a person looks. This module reads a rule's templates and its
``match`` and says, in words, how they can collide, so the rule can be fixed before it runs:

- the folder names no file at all (no ``{stem}`` or ``{name}``): every input collides;
- ``match`` admits several folders (``**``, a pattern without ``/``, a wildcard folder) and the
  folder has no ``{dir}``: ``a/hero.jpg`` and ``b/hero.jpg`` collide;
- ``match`` admits several extensions and the folder has no ``{source_ext}``/``{ext}``/``{name}``:
  ``hero.jpg`` and ``hero.png`` collide;
- the rule takes several sources and the folder has no ``{source}``.
"""

from __future__ import annotations

import posixpath

from daemon.outputs.placement import owned_folder
from daemon.rules import templates
from daemon.rules.schema import Rule

__all__ = ["collision_risks"]

_WILDCARDS = ("*", "?", "[")


def _several_folders(patterns: list[str]) -> bool:
    folders = set()
    for pattern in patterns:
        stripped = pattern.lstrip("/")
        if pattern.endswith("/") or "/" not in pattern:
            return True  # everything below a folder, or a name at any depth
        folder = posixpath.dirname(stripped)
        if any(w in folder for w in _WILDCARDS):
            return True
        folders.add(folder.lower())
    return len(folders) > 1


def _several_extensions(patterns: list[str]) -> bool:
    extensions = set()
    for pattern in patterns:
        if pattern.endswith("/"):
            return True
        name = pattern.rsplit("/", 1)[-1]
        ext = name.rsplit(".", 1)[1] if "." in name else ""
        if not ext or any(w in ext for w in _WILDCARDS):
            return True
        extensions.add(ext.lower())
    return len(extensions) > 1


def collision_risks(rule: Rule) -> list[str]:
    """How inputs this rule admits can ask for the same output folder (empty: they cannot)."""
    template = owned_folder(rule.manifest_template)
    names = set(templates.fields(template))
    fix = f"output folder {template!r}"
    if not names & {"stem", "name"}:
        return [f"{fix} names no input ({{stem}} or {{name}}): every input shares it"]
    risks = []
    include = rule.match.include
    if "dir" not in names and _several_folders(include):
        risks.append(
            f"{fix} has no {{dir}} but match admits several folders:"
            " a/x.jpg and b/x.jpg would share it"
        )
    if not names & {"source_ext", "ext", "name"} and _several_extensions(include):
        risks.append(
            f"{fix} has no {{source_ext}} but match admits several extensions:"
            " x.jpg and x.png would share it"
        )
    if "source" not in names and len(rule.match.source_names) > 1:
        risks.append(
            f"{fix} has no {{source}} but the rule takes several sources:"
            " the same path in two sources would share it"
        )
    return risks
