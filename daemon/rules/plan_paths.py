"""Plan paths: a plan's names made safe to be paths, and its content identity.

Values from a file (its name, folder, sidecar, metadata) enter path templates path-safe
("/" becomes "_" except in ``{dir}``), and the rendered path is checked again
(:func:`daemon.rules.templates.safe_relpath`), so a hostile name cannot leave a folder.
``output_path`` renders one output's name from a plan and one of its units; the manifest's
and the review sheet's paths are rendered per source; ``content_id`` is what a plan's
identity hashes. Split from :mod:`daemon.rules.plan`, which re-exports every name.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from daemon.errors import OutputError
from daemon.rules import templates
from daemon.rules.sidecars import Sidecar
from daemon.types import Plan, Unit


def _key_parts(key: str) -> tuple[tuple[str, ...], str, str, str]:
    """(folders, name, stem, suffix) of a key, as ``PurePosixPath`` gives them; without
    building one for the plain keys a burst has thousands of."""
    plain = key and "//" not in key and key[0] != "/" and key[-1] != "/" and "/." not in key
    if not plain or key[0] == ".":
        path = PurePosixPath(key)
        return path.parts[:-1], path.name, path.stem, path.suffix
    *folders, name = key.split("/")
    dot = name.rfind(".")
    if dot <= 0 or dot == len(name) - 1:
        return tuple(folders), name, name, ""
    return tuple(folders), name, name[:dot], name[dot:]


def _per_source_path(template: str, variables: Mapping[str, Any], sha256: str) -> str:
    # Only what the template names is made path-safe.
    safe = {
        k: path_safe(variables[k], keep_slashes=k == "dir")
        for k in templates.fields(template)
        if k in variables
    }
    try:
        return templates.safe_relpath(templates.render(template, safe))
    except OutputError:
        # A name that cannot be a path still needs a place for its failure report.
        return f"{variables['rule']}/_unplaceable/{sha256[:16]}/{PurePosixPath(template).name}"


def content_id(sha256: str, sidecar: Sidecar | None, extra: str | None = None) -> str:
    """The identity of what is processed: the image's bytes, plus its sidecar's (and mask's)
    if any, so that editing ``photo.txt`` makes the photo new work."""
    if sidecar is None and extra is None:
        return sha256
    parts = [sha256, sidecar.sha256 if sidecar else "", extra or ""]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


# Output format -> file extension of the written variants.
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def path_safe(value: Any, *, keep_slashes: bool = False) -> Any:
    """A variable's value as a path piece: control and invisible characters (a newline in a
    file name) become "_", and so does "/" except in values that are paths (``dir``)."""
    if not isinstance(value, str):
        return value
    if value.isascii() and value.isprintable():  # no control character: the common case
        return value if keep_slashes else value.replace("/", "_").replace("\\", "_")
    out = "".join("_" if unicodedata.category(c) in ("Cc", "Cf") else c for c in value)
    return out if keep_slashes else out.replace("/", "_").replace("\\", "_")


def output_path(plan: Plan, unit: Unit, variant: int, seed: int, *, video: bool = False) -> str:
    """Where variant ``variant`` (drawn with ``seed``) of ``unit`` goes in the plan's sink."""
    ext = unit.video_format if video else EXTENSIONS[plan.format]
    template = plan.path
    if template.endswith((".png", ".jpg", ".jpeg", ".webp")) and video:
        template = template.rsplit(".", 1)[0] + ".{ext}"
    if unit.variation is None:
        # A step without variations in a rule that has some: no empty "--" in its names.
        for form in ("-{variation}", "_{variation}", "{variation}-", "{variation}"):
            template = template.replace(form, "")
    variables = {
        **plan.vars,
        "step": unit.name,
        "model": unit.model,
        "variant": variant,
        "seed": seed,
        "ext": ext,
        "variation": unit.variation or "",
    }
    safe = {k: path_safe(v, keep_slashes=k == "dir") for k, v in variables.items()}
    path = templates.safe_relpath(templates.render(template, safe))
    # Placed beside a folder another input owns: its outputs follow the manifest there.
    return plan.placed.apply(path) if plan.placed else path
