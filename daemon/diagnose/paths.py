"""Offline: the folders and files a configuration names are usable, and stay where they belong.

- every configured folder exists, or can be created by this user (state, model cache, sinks,
  quarantine); read-only ones (reference folders) must exist; a missing source folder is a
  warning (the daemon waits for it to appear, as for a network mount);
- a rule's ``processed_dir``/``quarantine`` (inside each source root) is not inside a sink, and
  a sink is not inside them (moved inputs would become outputs, or the reverse);
- a mask or watermark file a rule names exists inside the rules folder or a named
  ``reference_dirs`` folder (``NAME:path``); absolute paths and ``..`` are refused with the
  same message whether or not the file exists, so ``check`` reveals nothing outside.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.config import yamlfile
from daemon.config.settings import FolderSinkConfig, FolderSourceConfig, Settings
from daemon.errors import Problem
from daemon.rules import templates
from daemon.rules.match import RuleSet

Where = Callable[[tuple[str | int, ...]], str]
"""``file:line:col`` of a config key path (or ``config: key.path`` without a file)."""


def folder_problems(settings: Settings, where: Where) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) about the folders the config names."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    writable: list[tuple[tuple[str | int, ...], Path]] = [(("state_dir",), settings.state_dir)]
    if settings.model_cache is not None:
        writable.append((("model_cache",), settings.model_cache))
    for name, sink in settings.sinks.items():
        if isinstance(sink, FolderSinkConfig):
            writable.append((("sinks", name, "path"), sink.path))
    for name, source in settings.sources.items():
        if isinstance(source, FolderSourceConfig):
            if source.quarantine is not None:
                writable.append((("sources", name, "quarantine"), source.quarantine))
            if not source.path.exists():
                warnings.append(
                    Problem(
                        where(("sources", name, "path")),
                        f"source {name!r}: {source.path} does not exist; the daemon waits"
                        " for it to appear",
                        f"create it (mkdir -p {source.path}) or fix the path",
                    )
                )
            elif not source.path.is_dir():
                errors.append(
                    Problem(
                        where(("sources", name, "path")),
                        f"source {name!r}: {source.path} is not a folder",
                        "point path at the drop folder",
                    )
                )
    for loc, path in writable:
        reason = _not_creatable(path)
        if reason:
            errors.append(
                Problem(where(loc), f"{'.'.join(map(str, loc))}: {reason}", _fix_for(path))
            )
    for name, path in settings.reference_dirs.items():
        if not path.is_dir():
            errors.append(
                Problem(
                    where(("reference_dirs", name)),
                    f"reference_dirs.{name}: {path} is not a folder",
                    "create it, or fix the path",
                )
            )
    return errors, warnings


def _not_creatable(path: Path) -> str | None:
    """Why this user cannot use ``path`` as a folder to write in, or None."""
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable by this user (uid {os.geteuid()})"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{path} cannot be created: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {parent} is not writable by this user"
    return None


def _fix_for(path: Path) -> str:
    return f"create it as the daemon's user (mkdir -p {path}) or choose another folder"


def moved_into_sink_problems(rules: RuleSet, settings: Settings) -> list[Problem]:
    """A rule's processed/quarantine folder inside a folder sink, or a sink inside it."""
    sinks = {
        name: sink.path
        for name, sink in settings.sinks.items()
        if isinstance(sink, FolderSinkConfig)
    }
    problems = []
    for item in rules.rules:
        output = item.rule.output
        folders = {"quarantine": output.quarantine}
        if output.on_success == "move":
            folders["processed_dir"] = output.processed_dir
        for key, value in folders.items():
            if value is None or ".." in PurePosixPath(value).parts or value.startswith("/"):
                continue  # cross_check refuses those
            for source_name in item.rule.match.source_names:
                source = settings.sources.get(source_name)
                if not isinstance(source, FolderSourceConfig):
                    continue
                folder = (source.path / value.strip("/")).resolve()
                for sink_name, sink_path in sinks.items():
                    sink_path = sink_path.resolve()
                    if folder.is_relative_to(sink_path) or sink_path.is_relative_to(folder):
                        problems.append(
                            Problem(
                                item.positions.where(("output", key), value=True),
                                f"output.{key}: {folder} (in source {source_name!r}) overlaps"
                                f" sink {sink_name!r} ({sink_path}); inputs and outputs"
                                " would mix",
                                "keep it a dot-folder of the source, away from every sink",
                            )
                        )
    return problems


def rule_file_problems(
    files: Iterable[tuple[dict[str, Any], yamlfile.Positions]],
    rules_dir: Path,
    reference_dirs: Mapping[str, Path],
) -> list[Problem]:
    """Masks and watermarks a rule names: inside the rules folder (or ``NAME:`` folder), and
    present when the name is fixed (a templated mask is checked per input, at run time).
    ``files``: each rule file's data as written and its key positions (valid or not)."""
    problems = []
    for data, positions in files:
        steps = data.get("steps")
        for i, step in enumerate(steps if isinstance(steps, list) else []):
            if not isinstance(step, dict):
                continue
            mask = step.get("mask")
            if isinstance(mask, str) and mask not in ("sidecar", "alpha"):
                problems += _file_problem(
                    positions, ("steps", i, "mask"), mask, rules_dir, reference_dirs
                )
            params = step.get("params")
            watermark = params.get("watermark") if isinstance(params, dict) else None
            if isinstance(watermark, str) and watermark:
                problems += _file_problem(
                    positions,
                    ("steps", i, "params", "watermark"),
                    watermark,
                    rules_dir,
                    reference_dirs,
                )
    return problems


def _file_problem(
    positions: yamlfile.Positions,
    loc: tuple[str | int, ...],
    value: str,
    rules_dir: Path,
    reference_dirs: Mapping[str, Path],
) -> list[Problem]:
    key = ".".join(map(str, loc))
    here = positions.where(loc, value=True)
    base, rel = rules_dir, value
    name, sep, rest = value.partition(":")
    if sep and name in reference_dirs:
        base, rel = reference_dirs[name], rest
    inside = f"a path inside the rules folder {rules_dir}" + (
        f" or NAME:path in one of reference_dirs ({', '.join(reference_dirs)})"
        if reference_dirs
        else ""
    )
    if rel.startswith(("/", "~")) or ".." in PurePosixPath(rel).parts or "\\" in rel:
        return [Problem(here, f"{key} {value!r} must be {inside}", "move the file there")]
    if templates.fields(rel):
        return []  # rendered per input; confinement is checked again then
    root = base.resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        # One message for missing and for a symlink out: nothing about outside is revealed.
        return [
            Problem(
                here,
                f"{key}: no file {rel!r} in {root}",
                f"put the file there; it must be {inside}",
            )
        ]
    return []
