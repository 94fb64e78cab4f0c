"""Loading rule files: parse and validate each one, report every problem as file:line:col.

``read_rules`` reads the rules directory into a :class:`RulesReport`: the rules that are
valid, every problem of every file, and the files that are not (kept as :class:`DraftRule`, so
the config's names can still be checked in them: an unknown model shows in the same run as a
schema error). ``load_rules`` raises one ``RuleError`` listing them all; ``cross_check`` adds
the problems only the config can reveal (unknown sources, sinks, model profiles, reference
folders); ``output_collisions`` the warnings about output folders two inputs could share.

Rule-level mistakes (a step taking input from a later step, two steps of one name) are located
here at their own key, not at line 1 where pydantic's rule-level validator would put them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from daemon.config import yamlfile
from daemon.diagnose import rule_checks
from daemon.diagnose.findings import in_file_order
from daemon.errors import ConfigError, Problem, RuleError
from daemon.rules import templates
from daemon.rules.collisions import collision_risks
from daemon.rules.match import RuleSet
from daemon.rules.references import resolve_references
from daemon.rules.schema import DECISION_VARS, SOURCE_VARS, Match, Output, Range, Rule, Step


@dataclass
class LoadedRule:
    """A validated rule and where its keys are in its file, for located messages."""

    rule: Rule
    file: Path | None
    positions: yamlfile.Positions
    data: dict[str, Any] | None = None  # as written in the file

    def where(self, *loc: str | int) -> str:
        return self.positions.where(loc)

    def raw(self) -> dict[str, Any]:
        """The rule as written (or, for a rule made in code, as its fields say)."""
        return self.data if self.data is not None else self.rule.model_dump()


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for model in (Rule, Match, Step, Output, Range):
        keys.update(model.model_fields)
    return keys


@dataclass
class DraftRule:
    """A rule file that parsed as YAML but failed validation: its data and key positions,
    so that names of sources, sinks and models can still be checked against the config."""

    data: dict[str, Any]
    file: Path
    positions: yamlfile.Positions


@dataclass
class RulesReport:
    """What ``read_rules`` found: the valid rules, the invalid files, every problem."""

    rules: RuleSet
    drafts: list[DraftRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class _InvalidRule(RuleError):
    def __init__(self, problems: list[Problem], draft: DraftRule | None):
        super().__init__(problems)
        self.draft = draft


def load_rule_file(path: Path) -> LoadedRule:
    """One rule file, validated; raises RuleError listing every problem in it."""
    data, positions = yamlfile.load(path)
    if not isinstance(data, dict):
        raise _InvalidRule(
            [
                Problem(
                    f"{path}:1:1",
                    "a rule file must be a mapping with name, match, prompt, steps and output",
                )
            ],
            None,
        )
    chain = rule_checks.chain_problems(data, positions)
    try:
        rule = Rule.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        if chain:
            # The rule-level validator stops at its first finding and has no location: ours
            # list each one at its own key.
            errors = [
                e
                for e in errors
                if not (
                    positions.user_loc(e["loc"]) == ()
                    and any(text in e["msg"] for text in rule_checks.CHAIN_MESSAGES)
                )
            ]
        problems = yamlfile.validation_problems(_Errors(errors), positions, _known_keys())
        problems += chain
        raise _InvalidRule(in_file_order(problems), DraftRule(data, path, positions)) from None
    loaded = LoadedRule(rule, path, positions, data)
    problems = _unknown_variables(loaded)
    if problems:
        raise _InvalidRule(problems, DraftRule(data, path, positions))
    return loaded


@dataclass
class _Errors:
    """Pydantic's error list, filtered, in the shape ``validation_problems`` reads."""

    items: list[Any]

    def errors(self) -> list[Any]:
        return self.items


def _unknown_variables(loaded: LoadedRule) -> list[Problem]:
    """Variables no rule var, built-in or sidecar could provide. Sidecar vars are only known
    per file, so a rule that reads sidecars (match.sidecar) defers those to run time."""
    rule = loaded.rule
    if rule.match.sidecar == "required":
        return []
    # A step's prompt_matrix names are known too (plan time names a step that lacks one).
    known = set(SOURCE_VARS) | set(rule.vars) | rule.matrix_variables()
    if rule.on != "arrival":  # started by a decision: {note}, {parent_rule}, ...
        known |= set(DECISION_VARS)
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
        places += [(("steps", i, "prompts", j), p) for j, p in enumerate(step.prompts or [])]
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


def read_rules(rules_dir: Path) -> RulesReport:
    """Every rule file: the valid ones, the invalid ones and every problem of each."""
    report = RulesReport(RuleSet([]))
    loaded: list[LoadedRule] = []
    for path in rule_files(rules_dir):
        try:
            loaded.append(load_rule_file(path))
        except _InvalidRule as exc:
            report.problems.extend(exc.problems)
            if exc.draft is not None:
                report.drafts.append(exc.draft)
        except ConfigError as exc:
            report.problems.extend(exc.problems)
    names: dict[str, LoadedRule] = {}
    for item in loaded:
        other = names.get(item.rule.name)
        if other:
            report.problems.append(
                Problem(
                    item.where("name"),
                    f"rule name {item.rule.name!r} is already used by {other.file}",
                    "rule names must be unique across the rules folder",
                )
            )
        names[item.rule.name] = item
    report.rules = RuleSet(loaded)
    return report


def load_rules(rules_dir: Path) -> RuleSet:
    """Load every rule file; raise one RuleError listing every problem in every file."""
    report = read_rules(rules_dir)
    if report.problems:
        raise RuleError(report.problems)
    return report.rules


def cross_check(
    rules: RuleSet,
    sources: set[str],
    sinks: set[str],
    profiles: set[str],
    reference_dirs: dict[str, Path] | None = None,
    rules_dir: Path | None = None,
    drafts: Sequence[DraftRule] = (),
) -> list[Problem]:
    """Problems only visible with the config: unknown sources, sinks, profiles, references;
    and the chain's: ``pick`` indices the input step cannot have, folders that leave the
    source. ``drafts`` (files that failed validation) get the name checks too."""
    problems = []
    for draft in drafts:
        problems += rule_checks.unknown_names(draft.data, draft.positions, sources, sinks, profiles)
        problems += rule_checks.semantic_problems(draft.data, draft.positions)
    for item in rules.rules:
        problems += rule_checks.semantic_problems(item.raw(), item.positions)
        rule = item.rule
        if not rule.match.source_names and rule.on == "arrival":
            problems.append(
                Problem(item.where("match"), "match names no source; add 'source: NAME'")
            )
        names = {r.rule.name for r in rules.rules}
        for i, name in enumerate(rule.after):
            if name == rule.name:
                problems.append(
                    Problem(
                        item.where("after", i),
                        "a rule does not follow its own outputs (it would start itself)",
                        "name another rule, or use refine: for rounds of this one",
                    )
                )
            elif name not in names:
                problems.append(
                    Problem(
                        item.where("after", i),
                        f"no rule named {name!r} to follow",
                        f"rules: {', '.join(sorted(names - {rule.name}))}",
                    )
                )
        if rule.refine is not None and rule.refine not in names:
            problems.append(
                Problem(
                    item.where("refine"),
                    f"no rule named {rule.refine!r} to run refine rounds",
                    f"rules: {', '.join(sorted(names))}",
                )
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
                if pattern == "sidecar":  # the photo's sidecar lists them: known per file
                    continue
                try:
                    if not resolve_references(
                        [pattern], rules_dir or Path("."), reference_dirs or {}
                    ):
                        problems.append(
                            Problem(
                                item.positions.where(("steps", i, "references", j), value=True),
                                f"references {pattern!r} matches no file",
                                missing_file=True,
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
