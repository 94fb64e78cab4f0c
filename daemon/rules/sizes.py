"""Explicit step sizes checked against what each model accepts (``darkroom check``).

A step's ``size: WxH`` is used as written, so a size the model cannot take (FLUX and Wan want
multiples of 16, LTX-Video of 32) would fail every job of the step. The check needs the
config's profiles (which model runs the step), so it runs with the other cross-checks, not
while a rule file is parsed. Aspect ratios and presets are never a problem: the runner fits
them to the model (:func:`daemon.execution.prepare.fitted_size`).
"""

from __future__ import annotations

from collections.abc import Mapping

from backends.sizes import size_problem, size_rule
from daemon.config.profiles import Profile
from daemon.errors import Problem
from daemon.rules.match import RuleSet
from daemon.rules.schema import parse_size

__all__ = ["size_problems"]


def size_problems(rules: RuleSet, profiles: Mapping[str, Profile]) -> list[Problem]:
    """One located problem per (step, profile) whose explicit ``size`` the model refuses."""
    problems = []
    for item in rules.rules:
        for i, step in enumerate(item.rule.steps):
            if not step.size:
                continue
            try:
                width, height = parse_size(step.size)
            except ValueError:
                continue  # already reported when the rule file was read
            if not (isinstance(width, int) and isinstance(height, int)):
                continue
            for name in step.profiles:
                profile = profiles.get(name)
                if profile is None:
                    continue  # unknown profiles are cross_check's problem
                try:
                    rule = size_rule(profile.task, profile.options)
                except ValueError as exc:
                    problems.append(Problem(f"config: profiles.{name}.options", str(exc)))
                    continue
                problem = size_problem(width, height, rule, who=f"model profile {name!r}")
                if problem:
                    problems.append(
                        Problem(item.positions.where(("steps", i, "size"), value=True), problem)
                    )
    return problems
