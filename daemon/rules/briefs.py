"""Briefs without a photo: a dropped ``*.brief.yaml`` / ``*.brief.csv`` parsed into rows.

A brief is written by whoever can write the drop folder, so it is parsed as untrusted (like a
sidecar): at most :data:`MAX_BRIEF_BYTES`, YAML without aliases and within the sidecar node
caps, at most :data:`MAX_ROWS` rows, prompts of at most ``limits.max_prompt_chars``. Each row
becomes one plan (:func:`daemon.rules.plan.plan_for` with ``brief=``); its identity is the
row's own content (so editing one row of a long CSV runs that row again, not the others).

Forms (docs/rules.md, "Briefs without a photo")::

    # one prompt                      # several rows, with shared defaults
    prompt: a bottle on a terrace     size: square
    size: 16:9                        briefs:
    count: 4                            - {name: oil, prompt: olive oil on a terrace}
                                        - {prompt: lemons in a bowl, count: 2}

    # CSV: a header row, then one row per brief (other columns become variables)
    name,prompt,size,count,references,product
    oil,olive oil on a terrace,square,2,refs/oil/*.png,oil

A fault in the file as a whole (not UTF-8, not YAML, no ``prompt`` column, too many rows) is
a :class:`BriefError` naming ``file:line``; a fault in one row is that row's ``error`` (its
plan fails with it; the other rows run).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from daemon.config import yamlfile
from daemon.errors import InputError
from daemon.rules.schema import OUTPUT_VARS, SOURCE_VARS, parse_size
from daemon.rules.sidecars import DEFAULT_LIMITS, SidecarLimits

if TYPE_CHECKING:
    from daemon.rules.references import RuleFiles
    from daemon.rules.schema import Rule
    from daemon.types import Arrival, Plan

MAX_BRIEF_BYTES = 1024 * 1024  # a 500-row CSV with long prompts is ~500 KB
MAX_ROWS = 500  # rows per brief: each is a plan with its own folder
MAX_COUNT = 64  # images per row and step (a step's own variants cap)
MAX_REFERENCES = 14  # the most images a model takes
ROW_FIELDS = ("name", "prompt", "negative_prompt", "size", "count", "seed", "references", "vars")
SHARED_FIELDS = tuple(f for f in ROW_FIELDS if f not in ("name", "prompt"))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BriefError(InputError):
    """The brief as a whole cannot be read; the message starts with ``file:line``."""


@dataclass(frozen=True)
class BriefRow:
    """One row of a brief: what one plan is made from. ``id`` names its output folder (the
    row's ``name``, else ``row-N``; "" for a one-prompt brief); ``line`` is where it starts in
    the file; ``error``: why this row cannot run (its plan fails with it)."""

    id: str
    line: int
    prompt: str
    negative_prompt: str | None = None
    size: str | None = None
    count: int | None = None
    seed: int | None = None
    references: list[str] = field(default_factory=list)
    vars: dict[str, str | int | float] = field(default_factory=dict)
    error: str | None = None

    @property
    def sha256(self) -> str:
        """The row's identity: its values (not its line: moving a row does not rerun it)."""
        values = {
            "id": self.id,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "size": self.size,
            "count": self.count,
            "seed": self.seed,
            "references": self.references,
            "vars": self.vars,
            "error": self.error,
        }
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_brief(key: str, data: bytes, limits: SidecarLimits = DEFAULT_LIMITS) -> list[BriefRow]:
    """The rows of the brief ``key``; BriefError (an input fault) when the file as a whole
    cannot be read. Never raises anything else for any bytes."""
    if len(data) > MAX_BRIEF_BYTES:
        raise BriefError(
            f"{key}:1: brief is {len(data)} bytes, over the {MAX_BRIEF_BYTES}-byte limit;"
            " split it into several briefs"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BriefError(f"{key}:{line}: brief is not UTF-8 text; save it as UTF-8") from None
    try:
        if key.lower().endswith(".csv"):
            rows = _csv_rows(key, text, limits)
        else:
            rows = _yaml_rows(key, text, limits)
    except BriefError:
        raise
    except RecursionError:
        raise BriefError(f"{key}:1: brief is nested too deeply to read") from None
    except Exception as exc:  # a parser's surprise is still the file's fault
        raise BriefError(f"{key}:1: brief cannot be read ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise BriefError(f"{key}:1: brief has no rows: give at least one prompt")
    if len(rows) > MAX_ROWS:
        raise BriefError(
            f"{key}:{rows[MAX_ROWS].line}: brief has {len(rows)} rows, over the limit of"
            f" {MAX_ROWS}; split it into several briefs"
        )
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        if row.id in seen and row.error is None:
            row = _with_error(
                row, f"{key}:{row.line}: name {row.id!r} is used by line {seen[row.id]} too"
            )
        seen.setdefault(row.id, row.line)
        out.append(row)
    return out


def _csv_rows(key: str, text: str, limits: SidecarLimits) -> list[BriefRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[BriefRow] = []
    number = 0
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            _check_header(key, line, header)
            continue
        number += 1
        if number > MAX_ROWS:  # the count is reported; the rest is not parsed
            rows.append(BriefRow(id="", line=line, prompt=""))
            break
        if len(cells) > len(header):
            rows.append(
                BriefRow(
                    id=f"row-{number}",
                    line=line,
                    prompt="",
                    error=f"{key}:{line}: {len(cells)} cells but the header names"
                    f" {len(header)} columns (quote cells that hold commas)",
                )
            )
            continue
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for column, cell in zip(header, cells, strict=False):
            cell = cell.strip()
            if column in ROW_FIELDS:
                if cell:
                    values[column] = (
                        [r.strip() for r in re.split(r"[;|]", cell) if r.strip()]
                        if column == "references"
                        else cell
                    )
            elif cell:
                extra[column] = cell
        if extra:
            values["vars"] = extra
        rows.append(_row(key, line, f"row-{number}", values, limits))
    if header is None:
        raise BriefError(f"{key}:1: brief is empty: write a header row (prompt,size,count,...)")
    return rows


def _check_header(key: str, line: int, header: list[str]) -> None:
    if "prompt" not in header:
        raise BriefError(
            f"{key}:{line}: the header has no 'prompt' column (columns: {', '.join(header)});"
            f" known columns: {', '.join(f for f in ROW_FIELDS if f != 'vars')}, and any"
            " other becomes a template variable"
        )
    for column in header:
        if column in ROW_FIELDS:
            continue
        if column == "vars" or not _VAR.match(column):
            raise BriefError(
                f"{key}:{line}: column {column!r} must be a name of letters, digits and _"
                " (it becomes the template variable {" + column + "})"
            )
        if column in SOURCE_VARS + OUTPUT_VARS:
            raise BriefError(f"{key}:{line}: column {column!r} is a built-in variable; rename it")
    if len(set(header)) != len(header):
        raise BriefError(f"{key}:{line}: the header names a column twice")


def _yaml_rows(key: str, text: str, limits: SidecarLimits) -> list[BriefRow]:
    try:
        values = yamlfile.safe_loads(text, max_nodes=limits.max_nodes, max_depth=limits.max_depth)
    except yamlfile.UntrustedYAMLError as exc:
        raise BriefError(f"{key}:1: brief refused: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise BriefError(f"{key}:{line}: brief is not valid YAML: {problem}") from None
    # Aliases are refused above, so composing again cannot expand anything: it gives the lines.
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if isinstance(values, list):
        return _listed(key, values, node, {}, limits)
    if not isinstance(values, dict):
        raise BriefError(
            f"{key}:1: a brief is a mapping (prompt: ..., size: ...) or a list of them,"
            f" not {type(values).__name__}"
        )
    if "briefs" in values:
        unknown = sorted(set(map(str, values)) - {"briefs", *SHARED_FIELDS})
        if unknown:
            raise BriefError(
                f"{key}:{_line_of(node, unknown[0])}: unknown key {unknown[0]!r} next to"
                f" briefs: (shared defaults are {', '.join(SHARED_FIELDS)})"
            )
        listed = values["briefs"]
        if not isinstance(listed, list):
            raise BriefError(f"{key}:{_line_of(node, 'briefs')}: briefs: must be a list of rows")
        shared = {k: v for k, v in values.items() if k != "briefs"}
        return _listed(key, listed, _child(node, "briefs"), shared, limits)
    return [_row(key, node.start_mark.line + 1 if node else 1, "", values, limits)]


def _listed(
    key: str, rows: list[Any], node: Any, shared: dict[str, Any], limits: SidecarLimits
) -> list[BriefRow]:
    items = getattr(node, "value", None) or []
    out = []
    for index, values in enumerate(rows[: MAX_ROWS + 1]):
        line = items[index].start_mark.line + 1 if index < len(items) else 1
        if isinstance(values, str):
            values = {"prompt": values}
        if not isinstance(values, dict):
            out.append(
                BriefRow(
                    id=f"row-{index + 1}",
                    line=line,
                    prompt="",
                    error=f"{key}:{line}: a row is a mapping (prompt: ...), not"
                    f" {type(values).__name__}",
                )
            )
            continue
        merged = {**shared, **values}
        if isinstance(shared.get("vars"), dict) and isinstance(values.get("vars"), dict):
            merged["vars"] = {**shared["vars"], **values["vars"]}
        out.append(_row(key, line, f"row-{index + 1}", merged, limits))
    return out


def _row(
    key: str, line: int, default_id: str, values: dict[str, Any], limits: SidecarLimits
) -> BriefRow:
    """One row from its values; a fault is the row's ``error`` (``file:line: ...``)."""
    try:
        return _checked_row(key, line, default_id, values, limits)
    except ValueError as exc:
        row_id = values.get("name") if isinstance(values.get("name"), str) else None
        safe_id = row_id if row_id and _NAME.match(row_id) else default_id
        return BriefRow(id=safe_id, line=line, prompt="", error=f"{key}:{line}: {exc}")


def _checked_row(
    key: str, line: int, default_id: str, values: dict[str, Any], limits: SidecarLimits
) -> BriefRow:
    unknown = sorted(set(map(str, values)) - set(ROW_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown key {unknown[0]!r}; a row has {', '.join(ROW_FIELDS)}"
            " (put your own values under vars:)"
        )
    name = values.get("name")
    if name is not None:
        if not isinstance(name, str | int) or not _NAME.match(str(name)):
            raise ValueError(
                f"name {name!r} must be 1-64 letters, digits, '.', '_' or '-' (it names the"
                " row's output folder)"
            )
        row_id = str(name)
    else:
        row_id = default_id
    prompt = _text(values, "prompt", limits, required=True)
    negative = _text(values, "negative_prompt", limits)
    size = values.get("size")
    if size is not None:
        size = str(size).strip()
        parse_size(size)  # ValueError says which forms are allowed
    count = _whole(values, "count", 1, MAX_COUNT)
    seed = _whole(values, "seed", 0, 2**32 - 1)
    references = values.get("references", [])
    if isinstance(references, str):
        references = [references]
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        raise ValueError("references must be a list of paths (in a CSV: separated by ';')")
    if len(references) > MAX_REFERENCES:
        raise ValueError(
            f"{len(references)} references; a model takes at most {MAX_REFERENCES}: drop some"
        )
    variables = values.get("vars", {}) or {}
    if not isinstance(variables, dict):
        raise ValueError("vars must be a mapping of names to values")
    for var, value in variables.items():
        if not isinstance(var, str) or not _VAR.match(var):
            raise ValueError(f"variable name {var!r} must be letters, digits and _")
        if var in SOURCE_VARS + OUTPUT_VARS:
            raise ValueError(f"variable {var!r} is built in; choose another name")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"vars.{var} must be text or a number")
        if isinstance(value, str) and len(value) > limits.max_prompt_chars:
            raise ValueError(
                f"vars.{var} is {len(value)} characters, over the limit of"
                f" {limits.max_prompt_chars} (limits.max_prompt_chars)"
            )
    return BriefRow(
        id=row_id,
        line=line,
        prompt=prompt or "",
        negative_prompt=negative,
        size=size,
        count=count,
        seed=seed,
        references=list(references),
        vars=dict(variables),
    )


def _text(
    values: dict[str, Any], name: str, limits: SidecarLimits, *, required: bool = False
) -> str | None:
    value = values.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"no {name}: every row needs one")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, not {type(value).__name__}")
    value = value.strip()
    if len(value) > limits.max_prompt_chars:
        raise ValueError(
            f"{name} is {len(value)} characters, over the limit of {limits.max_prompt_chars};"
            " shorten it, or raise limits.max_prompt_chars in the config"
        )
    return value


def _whole(values: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = values.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ValueError(f"{name} {value!r} must be a whole number from {low} to {high}")
    return number


def _with_error(row: BriefRow, error: str) -> BriefRow:
    return BriefRow(id=row.id, line=row.line, prompt=row.prompt, error=error)


def _child(node: Any, name: str) -> Any:
    for key_node, value_node in getattr(node, "value", []) or []:
        if getattr(key_node, "value", None) == name:
            return value_node
    return None


def _line_of(node: Any, name: str) -> int:
    for key_node, _value in getattr(node, "value", []) or []:
        if getattr(key_node, "value", None) == name:
            return int(key_node.start_mark.line) + 1
    return 1


def brief_plans(
    rules: list[Rule],
    arrival: Arrival,
    data: bytes,
    files: Callable[[Rule], RuleFiles],
    limits: SidecarLimits = DEFAULT_LIMITS,
) -> list[Plan]:
    """One plan per row of the brief ``arrival`` (its bytes ``data``) and per rule that takes
    it. A brief that cannot be read at all gives each rule one failing plan whose error names
    ``file:line`` (an input fault: the brief is quarantined with that reason)."""
    from daemon.rules.plan import plan_for  # plan imports this module's types

    sha256 = hashlib.sha256(data).hexdigest()
    try:
        rows = parse_brief(arrival.key, data, limits)
    except BriefError as exc:
        rows = [BriefRow(id="", line=1, prompt="", error=str(exc))]
    return [
        plan_for(rule, arrival, sha256, brief=row, references=files(rule))
        for rule in rules
        for row in rows
    ]
