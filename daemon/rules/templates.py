"""Safe ``{name}`` substitution for prompts and output paths.

Only plain names are allowed: no attribute or index access (``{x.__class__}``,
``{x[0]}``), no conversions (``{x!r}``) and no format specs (``{x:>999}``), so a rule
file can never run code or read anything but the documented variables. ``{{`` and
``}}`` are literal braces. The one dotted form is ``{meta.caption}``: the image metadata
fields (:mod:`daemon.rules.metadata`), looked up as the flat key ``"meta.caption"`` — never
as an attribute. Rendering is one pass: a value is inserted as text and never read as a
template, so a file name or a caption holding ``{stem}`` stays ``{stem}``.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

from daemon.errors import OutputError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_META = re.compile(r"^meta\.[a-z][a-z_]*$")  # {meta.caption}: a flat key, not an attribute


class TemplateError(ValueError):
    """A template is malformed or names an unknown variable."""


def fields(template: str) -> list[str]:
    """The variable names used by ``template``; raises TemplateError if malformed."""
    return [name for _literal, name in _parsed(template) if name is not None]


@functools.lru_cache(maxsize=4096)
def _parsed(template: str) -> tuple[tuple[str, str | None], ...]:
    """``template`` as (literal text, variable name or None) pieces, checked once: a burst
    renders the same few templates for every file."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(
            f"malformed template {template!r}: {exc} (write {{{{ or }}}} for a literal brace)"
        ) from None
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            pieces.append((literal, None))
            continue
        if not (_NAME.match(name) or _META.match(name)):
            raise TemplateError(
                f"{{{name}}} is not allowed: only plain variable names like {{stem}} "
                "(no attribute access, indexing or expressions)"
            )
        if conversion:
            raise TemplateError(
                f"{{{name}!{conversion}}} is not allowed: conversions are not supported"
            )
        if spec:
            raise TemplateError(f"{{{name}:{spec}}} is not allowed: format specs are not supported")
        pieces.append((literal, name))
    return tuple(pieces)


def check(template: str, available: Iterable[str]) -> None:
    """Raise TemplateError naming the first variable that ``available`` does not provide."""
    known = available if isinstance(available, Mapping | set | frozenset) else set(available)
    for name in fields(template):
        if name not in known:
            raise TemplateError(
                f"unknown variable {{{name}}}; available: {', '.join(sorted(known))}"
            )


def render(template: str, variables: Mapping[str, object]) -> str:
    check(template, variables)
    out = []
    for literal, name in _parsed(template):
        out.append(literal)
        if name is not None:
            out.append(str(variables[name]))
    return "".join(out)


MAX_COMPONENT_BYTES = 255


def safe_relpath(path: str) -> str:
    """Normalise a rendered output path; refuse anything that could leave the sink root.

    Refused: absolute paths, ``..`` segments, NUL and control characters, empty results,
    and components longer than a filesystem allows. Unicode is NFC-normalised so that
    the same name typed on macOS and Linux lands in the same place.
    """
    if path.isascii() and path.isprintable():  # the common case: nothing to fold or refuse
        path = path.replace("\\", "/")
        return _checked_parts(path, path.split("/"))
    if "\x00" in path or any(unicodedata.category(c) in ("Cc", "Cf") for c in path):
        # Cf covers bidi overrides and zero-width characters that make names lie.
        raise OutputError(
            f"output path {path!r} contains control or invisible formatting characters"
        )
    # NFKC folds look-alikes such as the fullwidth solidus into the real "/" before checking.
    path = unicodedata.normalize("NFKC", path.replace("\\", "/"))
    return _checked_parts(path, PurePosixPath(path).parts)


def _checked_parts(path: str, pieces: Iterable[str]) -> str:
    """``path``'s pieces without empty and ``.`` ones, joined; OutputError for ``..``, an
    absolute or empty path, or a piece longer than a file name may be."""
    if path.startswith("/"):
        raise OutputError(f"output path {path!r} is absolute; paths are relative to the sink root")
    parts = [p for p in pieces if p not in ("", ".")]
    if not parts:
        raise OutputError(f"output path {path!r} is empty")
    for part in parts:
        if part == "..":
            raise OutputError(f"output path {path!r} contains '..'; it would leave the sink root")
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            raise OutputError(
                f"output path component {part[:40]!r}... is longer than {MAX_COMPONENT_BYTES} bytes"
            )
    return "/".join(parts)
