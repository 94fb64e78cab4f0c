"""Which model can take a step's inputs (``darkroom check``): briefs and companions.

A rule that takes briefs (``match: {briefs: true}``) has no photo: the steps that take its
input (the first, and any ``input: source``) need a model that makes images from a prompt
alone (task ``text2img``, or a hosted profile with the option ``text_to_image``); a photo's
steps need a model that takes an image. A step with ``companions`` gives its model several
images for one output: the model must take extra images (IP-Adapter, multi-image edit, the
hosted models), and at most as many as it accepts. Needs the config's profiles, so it runs
with the other cross-checks (:func:`daemon.service.app.config_problems`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from daemon.config.profiles import Profile
from daemon.errors import Problem
from daemon.rules.match import RuleSet

if TYPE_CHECKING:
    from daemon.rules.load import LoadedRule

__all__ = ["MULTI_IMAGE_TASKS", "input_problems", "takes_briefs"]

TEXT_TO_IMAGE_TASKS = frozenset({"text2img"})
# Tasks whose models take images besides the input (``Request.references``).
MULTI_IMAGE_TASKS = frozenset({"ip-adapter", "multi-edit", "stub"})
NO_MODEL_TASKS = frozenset({"rendition"})


def takes_briefs(profile: Profile) -> bool:
    """Whether ``profile`` makes images from a prompt alone."""
    return profile.task in TEXT_TO_IMAGE_TASKS or bool(profile.options.get("text_to_image"))


def input_problems(rules: RuleSet, profiles: Mapping[str, Profile]) -> list[Problem]:
    """One located problem per (step, profile) that cannot take the step's inputs."""
    problems = []
    for item in rules.rules:
        rule = item.rule
        for i, step in enumerate(rule.steps):
            from_source = rule.input_of(i) == "source"
            for j, name in enumerate(step.profiles):
                profile = profiles.get(name)
                if profile is None:
                    continue  # unknown profiles are cross_check's problem
                at = ("steps", i, "model") if step.model else ("steps", i, "models", j)
                where = item.positions.where(at, value=True)
                if from_source and rule.match.briefs and not takes_briefs(profile):
                    problems.append(
                        Problem(
                            where,
                            f"model profile {name!r} (task {profile.task}) needs an input image,"
                            " but this rule takes briefs (no photo)",
                            "use a text-to-image profile (tiny-t2i, sd-turbo-t2i,"
                            " sdxl-turbo-t2i, flux-schnell-t2i, nano-banana-pro), or take this"
                            " step's input from an earlier step",
                        )
                    )
                elif profile.task in TEXT_TO_IMAGE_TASKS and not (
                    from_source and rule.match.briefs
                ):
                    problems.append(
                        Problem(
                            where,
                            f"model profile {name!r} makes images from a prompt alone and"
                            " takes no input image",
                            "use it in a rule with match: {briefs: true} (first step), or"
                            " pick an image-to-image profile",
                        )
                    )
                if step.companions:
                    problems += _companion_problems(item, i, name, profile, where)
    return problems


def _companion_problems(
    item: LoadedRule, index: int, name: str, profile: Profile, where: str
) -> list[Problem]:
    rule = item.rule
    step = rule.steps[index]
    extra = sum(rule.companions[c].max for c in step.companions)
    hosted_limit = profile.options.get("max_input_images") or profile.options.get("max_images")
    if profile.task not in MULTI_IMAGE_TASKS and not profile.provider:
        return [
            Problem(
                where,
                f"model profile {name!r} (task {profile.task}) takes one image, but step"
                f" {step.name!r} gives it companions {step.companions}",
                "use a model that takes several images: an ip-adapter or multi-edit profile,"
                " or a hosted one (nano-banana-pro, seedream-4)",
            )
        ]
    if isinstance(hosted_limit, int) and 1 + extra > hosted_limit:
        return [
            Problem(
                where,
                f"model profile {name!r} takes at most {hosted_limit} images, but step"
                f" {step.name!r} may give it {1 + extra} (the input and up to {extra}"
                " companions)",
                "lower the companions' max, or use a model that takes more images",
            )
        ]
    return []
