"""Loading rule files: parse and validate each one, report every problem as file:line:col.

``load_rules`` reads the rules directory into a :class:`~daemon.rules.match.RuleSet` or raises
one ``RuleError`` listing every problem in every file; ``cross_check`` adds the problems only
the config can reveal (unknown sources, sinks, model profiles, reference folders);
``output_collisions`` the warnings about output folders two inputs could share.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from daemon.config import yamlfile
from daemon.errors import ConfigError, Problem, RuleError
from daemon.rules import templates
from daemon.rules.collisions import collision_risks
from daemon.rules.match import RuleSet
from daemon.rules.references import resolve_references
from daemon.rules.schema import SOURCE_VARS, Match, Output, Range, Rule, Step


@dataclass
class LoadedRule:
    """A validated rule and where its keys are in its file, for located messages."""

    rule: Rule
    file: Path | None
    positions: yamlfile.Positions

    def where(self, *loc: str | int) -> str:
        return self.positions.where(loc)


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for model in (Rule, Match, Step, Output, Range):
        keys.update(model.model_fields)
    return keys


def load_rule_file(path: Path) -> LoadedRule:
    """One rule file, validated; raises RuleError listing every problem in it."""
    data, positions = yamlfile.load(path)
    if not isinstance(data, dict):
        raise RuleError(
            [
                Problem(
                    f"{path}:1:1",
                    "a rule file must be a mapping with name, match, prompt, steps and output",
                )
            ]
        )
    try:
        rule = Rule.model_validate(data)
    except ValidationError as exc:
        raise RuleError(yamlfile.validation_problems(exc, positions, _known_keys())) from None
    loaded = LoadedRule(rule, path, positions)
    problems = _unknown_variables(loaded)
    if problems:
        raise RuleError(problems)
    return loaded


def _unknown_variables(loaded: LoadedRule) -> list[Problem]:
    """Variables no rule var, built-in or sidecar could provide. Sidecar vars are only known
    per file, so a rule that reads sidecars (match.sidecar) defers those to run time."""
    rule = loaded.rule
    if rule.match.sidecar == "required":
        return []
    known = set(SOURCE_VARS) | set(rule.vars)
    problems: list[Problem] = []
    places: list[tuple[tuple[str | int, ...], str | None]] = [
        (("prompt",), rule.prompt),
        (("negative_prompt",), rule.negative_prompt),
    ]
    for i, step in enumerate(rule.steps):
        places += [
            (("steps", i, "prompt"), step.prompt),
            (("steps", i, "negative_prompt"), step.negative_prompt),
        ]
    for loc, text in places:
        for name in templates.fields(text or ""):
            if name not in known:
                problems.append(
                    Problem(
                        loaded.positions.where(loc, value=True),
                        f"unknown variable {{{name}}}",
                        yamlfile.suggest(name, known)
                        or "define it under vars:, or in a sidecar"
                        " file (then set match.sidecar: required)",
                    )
                )
    return problems


def rule_files(rules_dir: Path) -> list[Path]:
    """The rule files of ``rules_dir``, by name: ``*.yaml``/``*.yml`` not starting with
    ``_`` or ``.`` (so a rule can be parked as ``_draft.yaml``)."""
    if not rules_dir.is_dir():
        return []
    return sorted(
        p
        for p in rules_dir.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(("_", ".")) and p.is_file()
    )


def load_rules(rules_dir: Path) -> RuleSet:
    """Load every rule file; raise one RuleError listing every problem in every file."""
    problems: list[Problem] = []
    loaded: list[LoadedRule] = []
    for path in rule_files(rules_dir):
        try:
            loaded.append(load_rule_file(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
    names: dict[str, LoadedRule] = {}
    for item in loaded:
        other = names.get(item.rule.name)
        if other:
            problems.append(
                Problem(
                    item.where("name"),
                    f"rule name {item.rule.name!r} is already used by {other.file}",
                )
            )
        names[item.rule.name] = item
    if problems:
        raise RuleError(problems)
    return RuleSet(loaded)


def cross_check(
    rules: RuleSet,
    sources: set[str],
    sinks: set[str],
    profiles: set[str],
    reference_dirs: dict[str, Path] | None = None,
    rules_dir: Path | None = None,
) -> list[Problem]:
    """Problems only visible with the config: unknown sources, sinks, profiles, references."""
    problems = []
    for item in rules.rules:
        rule = item.rule
        if not rule.match.source_names:
            problems.append(
                Problem(item.where("match"), "match names no source; add 'source: NAME'")
            )
        for i, name in enumerate(rule.match.source_names):
            if name not in sources:
                loc: tuple[str | int, ...] = (
                    ("match", "source")
                    if rule.match.source == name
                    else ("match", "sources", i - bool(rule.match.source))
                )
                problems.append(
                    Problem(
                        item.positions.where(loc, value=True),
                        f"unknown source {name!r}; configured sources: {_listing(sources)}",
                        yamlfile.suggest(name, sources),
                    )
                )
        if rule.output.sink not in sinks:
            problems.append(
                Problem(
                    item.positions.where(("output", "sink"), value=True),
                    f"unknown sink {rule.output.sink!r}; configured sinks: {_listing(sinks)}",
                    yamlfile.suggest(rule.output.sink, sinks),
                )
            )
        for i, step in enumerate(rule.steps):
            for j, profile in enumerate(step.profiles):
                if profile not in profiles:
                    at: tuple[str | int, ...] = (
                        ("steps", i, "model") if step.model else ("steps", i, "models", j)
                    )
                    problems.append(
                        Problem(
                            item.positions.where(at, value=True),
                            f"unknown model profile {profile!r}; see 'darkroom models'",
                            yamlfile.suggest(profile, profiles),
                        )
                    )
            for j, pattern in enumerate(step.references):
                try:
                    if not resolve_references(
                        [pattern], rules_dir or Path("."), reference_dirs or {}
                    ):
                        problems.append(
                            Problem(
                                item.positions.where(("steps", i, "references", j), value=True),
                                f"references {pattern!r} matches no file",
                            )
                        )
                except ValueError as exc:
                    problems.append(
                        Problem(
                            item.positions.where(("steps", i, "references", j), value=True),
                            str(exc),
                        )
                    )
    return problems


def output_collisions(rules: RuleSet) -> list[Problem]:
    """Warnings, not errors: rules whose output folder two admitted inputs can share
    (:mod:`daemon.rules.collisions`). At run time the second is placed beside the first."""
    warnings = []
    for item in rules.rules:
        output = item.rule.output
        key = "manifest" if output.manifest else "path" if output.path else None
        where = item.positions.where(("output", key) if key else ("output",))
        for risk in collision_risks(item.rule):
            warnings.append(
                Problem(
                    where,
                    f"rule {item.rule.name!r}: {risk}",
                    "add {dir} and {source_ext} to output.path (or leave it out:"
                    " the default folder is {rule}/{dir}/{stem}.{source_ext})",
                )
            )
    return warnings


def _listing(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none"
