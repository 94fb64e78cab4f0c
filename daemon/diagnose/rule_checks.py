"""Offline checks of one rule file's meaning, on the data as written, each at its own line.

They read the parsed YAML (not the validated model), so they run on a file that failed
validation too: a user sees a wrong step input, a ``pick`` past the outputs, a folder that
leaves the source and an unknown model name in the same run as a schema error.

- :func:`chain_problems`    steps named twice, an input that is not an earlier step, compare
                            steps with an output path lacking ``{model}``
- :func:`semantic_problems` ``pick`` ranges; ``processed_dir``/``quarantine`` inside the source
- :func:`unknown_names`     sources, sinks and model profiles the config does not have
"""

from __future__ import annotations

from typing import Any

from daemon.config import yamlfile
from daemon.errors import Problem

Loc = tuple[str | int, ...]


def _steps(data: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    steps = data.get("steps")
    return (
        [(i, s) for i, s in enumerate(steps) if isinstance(s, dict)]
        if isinstance(steps, list)
        else []
    )


def _profiles(step: dict[str, Any]) -> list[tuple[Loc, str]]:
    """(loc within the step, name) of each model profile a step names."""
    found: list[tuple[Loc, str]] = []
    if isinstance(step.get("model"), str):
        found.append((("model",), step["model"]))
    models = step.get("models")
    for j, name in enumerate(models if isinstance(models, list) else []):
        if isinstance(name, str):
            found.append((("models", j), name))
    return found


def chain_problems(data: dict[str, Any], positions: yamlfile.Positions) -> list[Problem]:
    """The checks of ``Rule._chain``, each located at the key it is about."""
    steps = _steps(data)
    problems: list[Problem] = []
    seen: list[str] = []
    names = [s.get("name") for _, s in steps]
    for k, (i, step) in enumerate(steps):
        name, source = step.get("name"), step.get("input")
        if isinstance(name, str) and name in seen:
            problems.append(
                Problem(
                    positions.where(("steps", i, "name"), value=True),
                    f"steps.{i}.name: two steps are named {name!r}; step names must be unique",
                    "rename one of them",
                )
            )
        if source not in (None, "source") and source not in seen:
            later = source in names[k + 1 :]
            problems.append(
                Problem(
                    positions.where(("steps", i, "input"), value=True),
                    f"steps.{i}.input: step {name!r} takes input from {source!r},"
                    f" which is {'a later step' if later else 'not an earlier step'}",
                    f"use one of: {', '.join(['source', *seen])}"
                    + (f", or move step {name!r} after {source!r}" if later else ""),
                )
            )
        if isinstance(name, str):
            seen.append(name)
    output = data.get("output")
    path = output.get("path") if isinstance(output, dict) else None
    compares = any(step.get("models") for _, step in steps)
    if compares and isinstance(path, str) and "{model}" not in path:
        problems.append(
            Problem(
                positions.where(("output", "path"), value=True),
                "output.path must contain {model} when a step compares several models",
                "add {model} to the file name, e.g. {step}-{model}-{variant}.{ext}",
            )
        )
    return problems


# What Rule._chain says: its unlocated error is replaced by chain_problems' (no other one is).
CHAIN_MESSAGES = ("takes input from", "two steps are named", "must contain {model}")


def semantic_problems(data: dict[str, Any], positions: yamlfile.Positions) -> list[Problem]:
    return _pick_problems(data, positions) + _folder_problems(data, positions)


def _pick_problems(data: dict[str, Any], positions: yamlfile.Positions) -> list[Problem]:
    """``pick`` indices past the outputs the input step makes (``pick: [5]`` after a step of
    2 variants fails every job at run time). Counted where the count is known: an input step
    that reads the source makes ``variants`` outputs per model."""
    steps = _steps(data)
    by_name = {s.get("name"): (i, s) for i, s in steps if isinstance(s.get("name"), str)}
    problems = []
    previous: str = "source"
    for i, step in steps:
        pick, source = step.get("pick"), step.get("input") or previous
        name = step.get("name")
        previous = name if isinstance(name, str) else previous
        if not isinstance(pick, list) or not all(isinstance(k, int) for k in pick):
            continue
        where = positions.where(("steps", i, "pick"), value=True)
        if any(k < 0 for k in pick):
            problems.append(
                Problem(where, f"steps.{i}.pick: indices count from 0", "remove negative ones")
            )
        if source == "source":
            problems.append(
                Problem(
                    where,
                    f"steps.{i}.pick: step {step.get('name')!r} takes the source image; pick"
                    " chooses among an earlier step's outputs",
                    "remove pick, or set input: to an earlier step",
                )
            )
            continue
        if source not in by_name:
            continue  # chain_problems reports it
        j, made = by_name[source]
        if (made.get("input") or _before(steps, j)) != "source":
            continue  # a step fed by a step: its count depends on what it was given
        variants = made.get("variants", len(made.get("seeds") or []) or 1)
        models = len(_profiles(made)) or 1
        if not isinstance(variants, int) or variants < 1:
            continue
        count = variants * models * _variations(made)
        beyond = [k for k in pick if k >= count]
        if beyond:
            problems.append(
                Problem(
                    where,
                    f"steps.{i}.pick: {pick} asks for output(s) {beyond}, but step {source!r}"
                    f" makes {count} ({variants} variant(s) x {models} model(s)"
                    + (
                        f" x {count // variants // models} prompt(s)"
                        if count > variants * models
                        else ""
                    )
                    + "; indices count from 0)",
                    f"pick from 0 to {count - 1}, or raise {source}'s variants",
                )
            )
    return problems


def _variations(step: dict[str, Any]) -> int:
    """Prompt variations multiply a step's outputs: ``prompts`` times every ``prompt_matrix``
    combination. Counted generously (both multiply), so pick is never refused wrongly."""
    count = 1
    prompts = step.get("prompts")
    if isinstance(prompts, list) and prompts:
        count *= len(prompts)
    matrix = step.get("prompt_matrix")
    if isinstance(matrix, dict):
        for values in matrix.values():
            if isinstance(values, list) and values:
                count *= len(values)
    return count


def _before(steps: list[tuple[int, dict[str, Any]]], index: int) -> str:
    """The default input of step ``index``: the step before it, or the source."""
    earlier = [s.get("name") for i, s in steps if i < index]
    return str(earlier[-1]) if earlier and isinstance(earlier[-1], str) else "source"


def _folder_problems(data: dict[str, Any], positions: yamlfile.Positions) -> list[Problem]:
    """``processed_dir`` and ``quarantine`` are folders inside the source root: an absolute
    path or a ``..`` would move a team's inputs out of the folders the daemon was given."""
    output = data.get("output")
    if not isinstance(output, dict):
        return []
    problems = []
    for key, default in (("processed_dir", ".processed"), ("quarantine", ".quarantine")):
        value = output.get(key)
        if not isinstance(value, str):
            continue
        parts = value.replace("\\", "/").split("/")
        if value.startswith(("/", "~")) or ".." in parts or not value.strip("/. "):
            problems.append(
                Problem(
                    positions.where(("output", key), value=True),
                    f"output.{key} {value!r} must be a folder inside the source root"
                    " (relative, without '..')",
                    f"use a dot-folder such as {default} (dot-folders are never watched)",
                )
            )
    return problems


def unknown_names(
    data: dict[str, Any],
    positions: yamlfile.Positions,
    sources: set[str],
    sinks: set[str],
    profiles: set[str],
) -> list[Problem]:
    """Unknown source, sink and model names (for a file that failed validation: a valid
    rule's are checked by ``cross_check`` on the model)."""
    uses: list[tuple[Loc, object, set[str], str]] = []
    match, output = data.get("match"), data.get("output")
    if isinstance(match, dict):
        uses.append((("match", "source"), match.get("source"), sources, "source"))
        listed = match.get("sources")
        for i, name in enumerate(listed if isinstance(listed, list) else []):
            uses.append((("match", "sources", i), name, sources, "source"))
    if isinstance(output, dict):
        uses.append((("output", "sink"), output.get("sink"), sinks, "sink"))
    for i, step in _steps(data):
        for loc, name in _profiles(step):
            uses.append((("steps", i, *loc), name, profiles, "model profile"))
    problems = []
    for loc, name, known, kind in uses:
        if isinstance(name, str) and name not in known:
            more = (
                "see 'darkroom models'"
                if kind == "model profile"
                else f"configured {kind}s: {', '.join(sorted(known)) or 'none'}"
            )
            problems.append(
                Problem(
                    positions.where(loc, value=True),
                    f"unknown {kind} {name!r}; {more}",
                    yamlfile.suggest(name, known),
                )
            )
    return problems


def profile_uses(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """(loc, profile name) of every model a rule file names."""
    return [(("steps", i, *loc), name) for i, step in _steps(data) for loc, name in _profiles(step)]
