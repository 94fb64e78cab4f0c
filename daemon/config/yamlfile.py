"""YAML loading that remembers where every key came from, for file:line:col errors.

PyYAML's safe loader gives plain data; its composer gives nodes with marks. We keep both:
``load`` returns the data and a :class:`Positions` map from key paths (``("steps", 0,
"model")``) to the line and column where that key or item starts.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from daemon.errors import ConfigError, Problem

Loc = tuple[str | int, ...]


class Positions:
    def __init__(self, file: str):
        self.file = file
        self._marks: dict[Loc, tuple[int, int]] = {}
        self._values: dict[Loc, tuple[int, int]] = {}

    def add(self, loc: Loc, node: yaml.Node) -> None:
        self._marks[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)

    def add_value(self, loc: Loc, node: yaml.Node) -> None:
        self._values[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)

    def has(self, loc: Loc) -> bool:
        return tuple(loc) in self._marks

    def user_loc(self, loc: Sequence[str | int]) -> Loc:
        """Drop the parts pydantic adds (union tags, validator names) that no file contains."""
        kept: Loc = ()
        for i, part in enumerate(loc):
            if _is_tag(part):
                continue
            written = self.has((*kept, part))
            # A union tag ("folder") sits between keys the file does contain.
            if not written and i + 1 < len(loc) and self.has((*kept, loc[i + 1])):
                continue
            kept = (*kept, part)
        return kept

    def where(self, loc: Sequence[str | int], *, value: bool = False) -> str:
        """``file:line:col`` of the deepest known prefix of ``loc`` (the file alone if none);
        with ``value``, of the value rather than its key when the full path is known."""
        loc = tuple(loc)
        if value and loc in self._values:
            line, col = self._values[loc]
            return f"{self.file}:{line}:{col}"
        for end in range(len(loc), -1, -1):
            mark = self._marks.get(loc[:end])
            if mark:
                return f"{self.file}:{mark[0]}:{mark[1]}"
        return self.file


def _walk(node: yaml.Node, loc: Loc, positions: Positions) -> None:
    positions.add(loc, node)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            positions.add((*loc, key), key_node)
            _walk(value_node, (*loc, key), positions)
            positions.add_value((*loc, key), value_node)
            # The key's own line is more useful than the value's for "unknown key" errors.
            positions.add((*loc, key), key_node)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), positions)


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. YAML 1.1 also reads on, off, yes
    and no as booleans, which turns a rule's ``on: approved`` into ``True: approved`` and a
    Norwegian ``no`` into False."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def loads(text: str, file: str) -> tuple[Any, Positions]:
    """Parse ``text``; syntax errors become a ConfigError located at file:line:col."""
    positions = Positions(file)
    try:
        node = yaml.compose(text, Loader=_Yaml12Loader)
        data = yaml.load(text, Loader=_Yaml12Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise ConfigError([Problem(where, f"invalid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, f"invalid YAML: {exc}")]) from None
    if node is not None:
        _walk(node, (), positions)
    return data, positions


def load(path: Path) -> tuple[Any, Positions]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(str(path), "not UTF-8 text")]) from None
    return loads(text, str(path))


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt key, or None."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def validation_problems(
    exc: Any, positions: Positions, known_keys: Iterable[str] = ()
) -> list[Problem]:
    """Translate a pydantic ValidationError into located problems, one per error."""
    known = set(known_keys)
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        user_loc = positions.user_loc(loc)
        dotted = ".".join(str(p) for p in user_loc) or "(top level)"
        hint = None
        if err["type"] == "extra_forbidden":
            message = f"unknown key {dotted!r}"
            hint = suggest(str(user_loc[-1]), known)
        elif err["type"] == "missing":
            message = f"missing required key {dotted!r}"
        else:
            message = f"{dotted}: {err['msg'].removeprefix('Value error, ')}"
        at_value = err["type"] not in ("extra_forbidden", "missing")
        problems.append(Problem(positions.where(user_loc, value=at_value), message, hint))
    return problems


def _is_tag(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or "-" in part and part.startswith("function"))


# -- untrusted YAML (sidecars) -------------------------------------------------------------


class UntrustedYAMLError(ValueError):
    """Untrusted YAML broke a rule of :func:`safe_loads`: an anchor or alias, too many nodes,
    too deep. The message says which, and where (line:col)."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases (``&a`` / ``*a``: a 400-byte
    "billion laughs" file expands to gigabytes in ``safe_load``) and counting nodes and depth
    as the document is composed, so a hostile file fails before it costs memory or time."""

    max_nodes = 0
    max_depth = 0

    def __init__(self, stream: str):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        where = f"line {event.start_mark.line + 1}, column {event.start_mark.column + 1}"
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise UntrustedYAMLError(
                f"anchors and aliases (&name, *name) are not allowed ({where}); write the value out"
            )
        self._nodes += 1
        if self._nodes > self.max_nodes:
            raise UntrustedYAMLError(f"more than {self.max_nodes} values ({where})")
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise UntrustedYAMLError(f"nested deeper than {self.max_depth} levels ({where})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def safe_loads(text: str, *, max_nodes: int, max_depth: int) -> Any:
    """Parse untrusted YAML (a sidecar an uploader wrote) into plain data: no anchors or
    aliases, at most ``max_nodes`` values nested at most ``max_depth`` deep, and none of the
    position walk that rule files get. Raises UntrustedYAMLError for those, and
    ``yaml.YAMLError`` for invalid YAML."""
    loader_class = type(
        "_Bounded", (_BoundedLoader,), {"max_nodes": max_nodes, "max_depth": max_depth}
    )
    loader = loader_class(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
