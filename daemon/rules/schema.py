"""The rule file's schema: the pydantic models of a rule (Rule, Match, Step, Output, Range).

These models are the rule language: their fields are the keys a rule file may use, their
validators the checks that need no config (``daemon.rules.load.cross_check`` does the rest),
and ``darkroom rules schema`` prints them as JSON Schema. Docstrings of the models become
descriptions in that schema, so they are changed only together with ``rules/schema.json``.

This module holds the Rule itself and is where every part is imported from; the parts live in
:mod:`~daemon.rules.schema_common` (template variables, globs, size presets, path checks),
:mod:`~daemon.rules.schema_match` (``match:``, ``companions:``),
:mod:`~daemon.rules.schema_step` (``steps:``) and :mod:`~daemon.rules.schema_output`
(``output:``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from daemon.rules import templates
from daemon.rules.schema_common import (
    BRIEF_GLOBS,
    BRIEF_SUFFIXES,
    DECISION_VARS,
    FILE_TYPES,
    IMAGE_GLOBS,
    MAX_COMPANION_IMAGES,
    MAX_VARIATIONS,
    OUTPUT_VARS,
    SIDECAR_REFERENCES,
    SIZE_PRESETS,
    SLUG,
    SOURCE_VARS,
    VIDEO_FORMATS,
    StrictModel,
    check_confined,
    is_brief,
    parse_size,
)
from daemon.rules.schema_match import Companion, Match, Range
from daemon.rules.schema_output import BRIEF_FOLDER, DEFAULT_FOLDER, Output
from daemon.rules.schema_step import Step, Variation

# The rule language in one place: importers use ``from daemon.rules.schema import X``.
__all__ = [
    "BRIEF_FOLDER",
    "BRIEF_GLOBS",
    "BRIEF_SUFFIXES",
    "DECISION_VARS",
    "DEFAULT_FOLDER",
    "FILE_TYPES",
    "IMAGE_GLOBS",
    "MAX_COMPANION_IMAGES",
    "MAX_VARIATIONS",
    "OUTPUT_VARS",
    "SIDECAR_REFERENCES",
    "SIZE_PRESETS",
    "SLUG",
    "SOURCE_VARS",
    "VIDEO_FORMATS",
    "Companion",
    "Match",
    "Output",
    "Range",
    "Rule",
    "Step",
    "StrictModel",
    "Variation",
    "check_confined",
    "is_brief",
    "parse_size",
]


class Rule(StrictModel):
    name: str = Field(pattern=SLUG)
    description: str | None = None
    priority: int = 0  # higher first
    daily_budget: float | None = Field(
        None, ge=0
    )  # USD per day for hosted models; local ones are free
    stop: bool = False  # when this rule matches, rules after it are not tried
    # What starts it: a file arriving, or a reviewer's decision on another rule's output
    # (the decided variant is the input; ``after`` limits which rules' outputs).
    on: Literal["arrival", "approved", "rejected"] = "arrival"
    after: list[str] = []
    # The rule a "refine" on one of this rule's outputs runs (default: this rule again).
    refine: str | None = Field(None, pattern=SLUG)
    match: Match = Field(default_factory=Match)
    vars: dict[str, str | int | float] = {}
    # Images that arrive with the photo: name -> Companion (or just its path template).
    companions: dict[str, Companion] = {}
    prompt: str = ""
    negative_prompt: str | None = None
    steps: list[Step] = Field(min_length=1)

    @field_validator("companions", mode="before")
    @classmethod
    def _companions(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", str(name)):
                    raise ValueError(f"companion name {name!r} must be letters, digits, _ and -")
            return {k: {"path": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    output: Output

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            templates.fields(value)  # malformed or unsafe: an error at its own line
        return value

    @field_validator("vars")
    @classmethod
    def _vars(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"variable name {name!r} must be letters, digits and _")
            if name in SOURCE_VARS + OUTPUT_VARS:
                raise ValueError(f"variable {name!r} is built in; choose another name")
        return value

    @model_validator(mode="after")
    def _chain(self) -> Rule:
        if self.after and self.on == "arrival":
            raise ValueError(
                "'after' names the rules whose decided outputs start this one:"
                " it needs on: approved or on: rejected"
            )
        seen: list[str] = []
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"two steps are named {step.name!r}; step names must be unique")
            if step.input not in (None, "source") and step.input not in seen:
                raise ValueError(
                    f"step {step.name!r} takes input from {step.input!r},"
                    " which is not an earlier step"
                )
            seen.append(step.name)
            unknown = [c for c in step.companions if c not in self.companions]
            if unknown:
                known = ", ".join(self.companions) or "none: add a companions: section"
                raise ValueError(
                    f"step {step.name!r} names companions {unknown} the rule does not define"
                    f" (defined: {known})"
                )
        if self.match.briefs and self.companions:
            raise ValueError("a rule that takes briefs has no photo to pair companions with")
        if self.match.briefs and self.output.path:
            folder = PurePosixPath(self.output.path).parent
            if "row" not in templates.fields(str(folder)):
                raise ValueError(
                    "output.path of a rule that takes briefs must name {row} in its folder"
                    " (each row of a brief owns its own folder), e.g."
                    " {rule}/{name}/{row}/{step}-{variant}.{ext}"
                )
        if (
            self.output.path
            and "{model}" not in self.output.path
            and any(s.models for s in self.steps)
        ):
            raise ValueError("output.path must contain {model} when a step compares several models")
        matrix = self.matrix_variables() - set(self.vars)
        for step in self.steps:
            texts: list[str | None] = [
                *(step.prompts or [step.prompt if step.prompt is not None else self.prompt])
            ]
            texts.append(step.negative_prompt or self.negative_prompt)
            named = {n for t in texts if t for n in templates.fields(t)}
            lacking = sorted((named & matrix) - set(step.prompt_matrix or {}))
            if lacking:
                raise ValueError(
                    f"step {step.name!r} has no prompt_matrix for"
                    f" {', '.join('{' + n + '}' for n in lacking)}, which its prompt names;"
                    " give the step its own prompt: (or the same prompt_matrix)"
                )
        if (
            self.output.path
            and "{variation}" not in self.output.path
            and any(s.prompts or s.prompt_matrix for s in self.steps)
        ):
            raise ValueError(
                "output.path must contain {variation} when a step has prompts: or prompt_matrix:"
            )
        return self

    @functools.cached_property
    def path_template(self) -> str:
        if self.output.path:
            return self.output.path
        if self.match.briefs:  # one folder per row: summer.brief.csv/row-3/...
            return BRIEF_FOLDER + "/{step}-{variant}.{ext}"
        varies = "-{variation}" if any(s.prompts or s.prompt_matrix for s in self.steps) else ""
        if any(s.models for s in self.steps):
            return DEFAULT_FOLDER + "/{step}-{model}" + varies + "-{variant}.{ext}"
        return DEFAULT_FOLDER + "/{step}" + varies + "-{variant}.{ext}"

    @functools.cached_property
    def folder_template(self) -> str:
        """The folder of the outputs: the leading part of the path template that names no
        output variable ({step}, {model}, ...) — when it names the file ({stem} or {name}),
        so that it is one input's folder; else the default folder."""
        kept: list[str] = []
        for part in PurePosixPath(self.path_template).parts[:-1]:
            if set(templates.fields(part)) & set(OUTPUT_VARS + ("ext",)):
                break
            kept.append(part)
        folder = "/".join(kept)
        if self.match.briefs:
            return folder if "row" in templates.fields(folder) else BRIEF_FOLDER
        return folder if {"stem", "name"} & set(templates.fields(folder)) else DEFAULT_FOLDER

    @functools.cached_property
    def manifest_template(self) -> str:
        return self.output.manifest or f"{self.folder_template}/manifest.json"

    @functools.cached_property
    def sheet_template(self) -> str:
        return self.output.sheet or f"{self.folder_template}/sheet.png"

    def digest(self) -> str:
        """Changes when the rule's meaning changes, not when whitespace or comments do."""
        return self._digest

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Rule:
        copied = super().model_copy(update=update, deep=deep)
        # Computed from the fields once per rule object (a burst plans thousands): not copied.
        for cached in (
            "_digest",
            "uses_metadata",
            "path_template",
            "folder_template",
            "manifest_template",
            "sheet_template",
        ):
            copied.__dict__.pop(cached, None)
        return copied

    @functools.cached_property
    def _digest(self) -> str:
        # Once per rule object: every plan names it (a burst plans thousands).
        meaning = self.model_dump(mode="json", exclude={"description"})
        for step in meaning["steps"]:
            # Keys added later count only when used: an unchanged rule keeps its digest.
            for key in ("prompts", "prompt_matrix"):
                if step.get(key) is None:
                    step.pop(key, None)
            if not step.get("companions"):
                step.pop("companions", None)
        if not meaning.get("companions"):
            meaning.pop("companions", None)
        if not meaning["match"].get("briefs"):
            meaning["match"].pop("briefs", None)
        for key, default in (("on", "arrival"), ("after", []), ("refine", None)):
            if meaning.get(key) == default:
                meaning.pop(key, None)
        canonical = json.dumps(
            meaning,
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def input_of(self, index: int) -> str:
        step = self.steps[index]
        if step.input:
            return step.input
        return "source" if index == 0 else self.steps[index - 1].name

    def variables_used(self) -> set[str]:
        texts = [self.prompt, self.negative_prompt] + [
            t for s in self.steps for t in (s.prompt, s.negative_prompt)
        ]
        return {name for text in texts if text for name in templates.fields(text)}

    def template_variables(self) -> set[str]:
        """Every variable any template of the rule names: prompts, prompt variations,
        references, masks, watermarks and output paths."""
        texts = [self.prompt, self.negative_prompt, self.path_template, self.output.manifest]
        texts += [self.output.sheet]
        for step in self.steps:
            texts += [step.prompt, step.negative_prompt, *(step.prompts or []), *step.references]
            texts += [step.mask, step.params.get("watermark")]
        return {name for text in texts if isinstance(text, str) for name in templates.fields(text)}

    @functools.cached_property
    def uses_metadata(self) -> bool:
        """Whether a template names ``{meta.*}``: then intake reads the image's metadata."""
        return any(name.startswith("meta.") for name in self.template_variables())

    def matrix_variables(self) -> set[str]:
        """The names the steps' ``prompt_matrix`` define (known to their prompts)."""
        return {name for s in self.steps for name in (s.prompt_matrix or {})}
