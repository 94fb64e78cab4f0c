"""Glob matching of source-relative keys.

A key is an object's path relative to its source root, with ``/`` separators
(``shoots/may/A.JPG``). A pattern is matched against the *whole* key:

- ``*`` matches any run of characters except ``/``; ``?`` matches one character except ``/``.
- ``**`` as a whole path segment matches zero or more whole directories:
  ``**/*.jpg`` matches ``a.jpg`` and ``x/y/a.jpg``; ``raw/**/*.png`` matches ``raw/a.png`` and
  ``raw/x/a.png``; a trailing ``raw/**`` matches everything below ``raw``. A ``**`` that is not
  a whole segment (``a**b``) is an ordinary ``*``, as in gitignore.
- ``[abc]``, ``[a-z]``, ``[!abc]`` / ``[^abc]`` match one character of (or not of) the class;
  a class never matches ``/``. A ``]`` right after ``[`` (or ``[!``) is a literal member.
- ``\\`` escapes the next character (``\\*`` is a literal star).
- A pattern with no ``/`` matches the file name at any depth, like gitignore:
  ``*.jpg`` is the same as ``**/*.jpg``. A leading ``/`` anchors a pattern to the root
  (``/*.jpg`` matches ``a.jpg`` only, not ``x/a.jpg``) and is otherwise ignored. A trailing
  ``/`` means "everything below": ``raw/x/`` is ``raw/x/**`` and ``raw/`` (no other ``/``) is
  ``**/raw/**``, a directory named ``raw`` at any depth.
- Matching is case-insensitive (``*.jpg`` matches ``A.JPG``): people dropping files from
  macOS or Windows shares do not control the case of names.

``compile_glob`` raises ``ValueError`` with a message that names the pattern for an invalid
pattern (empty, an unclosed ``[``, a dangling ``\\``, a reversed range).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

__all__ = ["compile_glob", "match_any", "selects"]

_ANY_DIRS = "(?:[^/]+/)*"  # zero or more whole directories, each ending in "/"
_ANY_BELOW = "[^/]+(?:/[^/]+)*"  # one or more segments (everything below a directory)


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern`` to a regular expression that ``fullmatch``-es keys (cached)."""
    if not isinstance(pattern, str):
        raise TypeError(f"glob pattern must be a str, not {type(pattern).__name__}")
    if not pattern or pattern == "/":
        raise ValueError(f"invalid glob pattern {pattern!r}: empty pattern")
    text = pattern
    if text.startswith("/"):
        text = text.lstrip("/")
    elif "/" not in text.rstrip("/"):
        text = "**/" + text
    if text.endswith("/"):
        text += "**"
    segments = text.split("/")
    parts: list[str] = []
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment == "**":
            if i == last:
                parts.append(_ANY_BELOW)
            elif not parts or not parts[-1].endswith(_ANY_DIRS):
                parts.append(_ANY_DIRS)  # "**/**/" is the same as "**/"
            continue
        if not segment:
            raise ValueError(f"invalid glob pattern {pattern!r}: empty path segment ('//')")
        parts.append(_translate_segment(segment, pattern))
        if i != last:
            parts.append("/")
    regex = "".join(parts)
    try:
        return re.compile(regex, re.IGNORECASE)
    except re.error as exc:  # e.g. a reversed range [z-a]
        raise ValueError(f"invalid glob pattern {pattern!r}: {exc.msg}") from None


def _translate_segment(segment: str, pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        c = segment[i]
        if c == "*":
            while i + 1 < n and segment[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 >= n:
                raise ValueError(f"invalid glob pattern {pattern!r}: dangling '\\' at the end")
            i += 1
            out.append(re.escape(segment[i]))
        elif c == "[":
            end, cls = _translate_class(segment, i, pattern)
            out.append(cls)
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _translate_class(segment: str, start: int, pattern: str) -> tuple[int, str]:
    """Translate the class opening at ``start``; returns (index of the closing ']', regex)."""
    i = start + 1
    negate = i < len(segment) and segment[i] in "!^"
    if negate:
        i += 1
    members: list[str] = []
    first = True
    while True:
        if i >= len(segment):
            raise ValueError(
                f"invalid glob pattern {pattern!r}: unclosed '[' "
                "(write '[[]' or '\\[' for a literal '[')"
            )
        c = segment[i]
        if c == "]" and not first:
            break
        escaped = c == "\\" and i + 1 < len(segment)
        if escaped:
            i += 1
            c = segment[i]
        if c == "-" and not escaped and members and i + 1 < len(segment) and segment[i + 1] != "]":
            members.append("-")
        else:
            members.append(re.escape(c) if c != "-" else "\\-")
        first = False
        i += 1
    body = "".join(members)
    return i, (f"[^/{body}]" if negate else f"(?!/)[{body}]")


def match_any(patterns: Sequence[str], key: str) -> bool:
    """Whether ``key`` matches at least one of ``patterns``."""
    if isinstance(patterns, str):
        raise TypeError("patterns must be a sequence of patterns, not one str")
    return _compile_any(tuple(patterns)).fullmatch(key) is not None


@functools.lru_cache(maxsize=256)
def _compile_any(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One expression for a rule's patterns: intake matches every arrival's key against the
    same list (ten image extensions by default), twice."""
    if not patterns:
        return re.compile("(?!)")  # matches nothing
    return re.compile("|".join(f"(?:{compile_glob(p).pattern})" for p in patterns), re.IGNORECASE)


def selects(key: str, include: Sequence[str], exclude: Sequence[str] = ()) -> bool:
    """Included by at least one ``include`` pattern (empty: everything) and by no ``exclude``."""
    if include and not match_any(include, key):
        return False
    return not match_any(exclude, key)
