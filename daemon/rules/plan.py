"""Planning: one matching rule + the facts gathered about one arrival -> a typed ``Plan``.

Intake gathers the bytes' hash, the header facts and metadata, the sidecar and the mask's
hash, and hands them here with a :class:`~daemon.rules.references.RuleFiles` finder; the plan
carries the rendered prompts (one unit per model and prompt variation), the seeds (drawn here,
once), the references, mask and watermark this arrival's templates name (found through the
finder, confined to their folders) and the output paths' templates. ``output_path`` renders
one output's name from a plan and one of its units.

Values from a file (its name, folder, sidecar, metadata) enter path templates path-safe ("/"
becomes "_" except in ``{dir}``) and glob-escaped, and the rendered path is checked again, so
a hostile name can neither widen a glob nor leave a folder: :mod:`daemon.rules.plan_files`
finds the files, :mod:`daemon.rules.plan_paths` makes values and names paths (its names are
importable from here too).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon.rules import templates
from daemon.rules.match import ImageFacts
from daemon.rules.metadata import ImageMetadata, empty_variables
from daemon.rules.plan_files import _Finder
from daemon.rules.plan_paths import (
    EXTENSIONS,
    _key_parts,
    _per_source_path,
    content_id,
    output_path,
    path_safe,
)
from daemon.rules.references import RuleFiles
from daemon.rules.schema import Rule, Step
from daemon.rules.sidecars import Sidecar
from daemon.types import (
    Arrival,
    ArrivalRecord,
    BriefRef,
    CompanionFile,
    Plan,
    ReferenceFile,
    Unit,
)

if TYPE_CHECKING:
    from daemon.rules.briefs import BriefRow

# Split into plan_files (finding references, masks, watermarks) and plan_paths (path-safe
# names, output paths, content identity); their names stay importable from here.
__all__ = [
    "EXTENSIONS",
    "content_id",
    "output_path",
    "path_safe",
    "plan_for",
    "source_variables",
]


def source_variables(
    rule: Rule, arrival: Arrival, facts: ImageFacts | None = None, now: float | None = None
) -> dict[str, Any]:
    """The built-in template variables (``SOURCE_VARS``) for ``arrival`` under ``rule``."""
    parts, name, stem, suffix = _key_parts(arrival.key)
    ext = suffix.lstrip(".").lower()
    return {
        "stem": stem,
        "name": name,
        "ext": ext,
        "source_ext": ext,
        "dir": "/".join(parts),
        "folder": parts[-1] if parts else "",
        "top_folder": parts[0] if parts else "",
        "source": arrival.source,
        "rule": rule.name,
        "date": _date(int(time.time() if now is None else now)),
        "width": facts.width if facts else "",
        "height": facts.height if facts else "",
        "sidecar": "",  # a .txt sidecar's text (plan_for fills it in)
        "row": "",  # a brief's row id (plan_for fills it in for briefs)
        "brief": "",  # a brief row's prompt
        **empty_variables(),  # {meta.*}: plan_for fills them in when intake read them
    }


def plan_for(
    rule: Rule,
    arrival: Arrival,
    sha256: str,
    *,
    facts: ImageFacts | None = None,
    sidecar: Sidecar | None = None,
    references: RuleFiles | Mapping[str, list[ReferenceFile]] | None = None,
    extra_content: str | None = None,
    error: str | None = None,
    rng: random.Random | None = None,
    metadata: ImageMetadata | None = None,
    brief: BriefRow | None = None,
    companions: Mapping[str, list[CompanionFile]] | None = None,
) -> Plan:
    """Everything needed to run ``rule`` on ``arrival``, as a typed, JSON-able ``Plan``.

    Random seeds are drawn here, once, so retries and restarts reuse them and the
    manifest can record them. ``references`` finds the files the rule's templates name for
    this arrival (references, masks, watermarks; a mapping of step names to already
    resolved references is accepted too); their hashes and ``extra_content`` (the sidecar
    mask's hash) join the bytes and the sidecar in the plan's content identity. A variable no
    one defines, or a path that names no file in its folder, makes the plan carry an
    ``error`` naming it: its jobs then fail with that reason instead of running (an input
    fault: this file asked for what is not there). ``error``, when given (a broken sidecar),
    is that reason instead. ``metadata``: the image's own (``{meta.caption}``, ...).

    ``brief``: a row of a brief without a photo (``arrival`` is the brief, ``sha256`` its
    bytes): its prompt (literal text, or ``{brief}`` in the rule's prompt), size, count, seed,
    references and variables go to the steps that take it; the row's own content is the
    plan's identity. ``companions``: the files found for the rule's companions (by name);
    their hashes join the identity.
    """
    rng = rng or random.SystemRandom()
    variables: dict[str, Any] = {
        **rule.vars,
        **(sidecar.vars if sidecar else {}),
        **source_variables(rule, arrival, facts),
    }
    if sidecar and sidecar.text is not None:
        variables["sidecar"] = sidecar.text
    if metadata is not None:
        variables.update(metadata.variables())
    if brief is not None:
        variables.update({**brief.vars, "row": brief.id, "brief": brief.prompt})
    # A reviewer's decision that started this plan ({note}, {parent_rule}, ...): its
    # values are text, never templates, and part of the plan's identity.
    decision = dict(arrival.context)
    variables.update(decision)
    if decision:
        extra_content = "\0".join(
            [extra_content or "", *(f"{k}={v}" for k, v in sorted(decision.items()))]
        )
    # A decision-started plan's input is an output (look/lamp.jpg/explore-0.png): its own
    # folder and files are named after that, but prompts and references speak of the photo
    # it came from ({stem} is "lamp", not "explore-0").
    said = variables
    if decision.get("parent_key"):
        parent = dataclasses.replace(arrival, key=decision["parent_key"])
        said = {**variables, **source_variables(rule, parent, facts), **decision}
    render = _Renderer(said)
    finder = _Finder(rule, references, sidecar, said)
    base_prompt = _base_prompt(rule, sidecar)
    if arrival.trigger == "refine" and decision.get("note"):
        # A refine round: the reviewer's note extends the prompt the variant was made with
        # (so round 3 keeps round 2's note), or the rule's when that is unknown.
        made_with = decision.get("parent_prompt")
        if made_with:
            base_prompt = made_with.replace("{", "{{").replace("}", "}}")
        base_prompt = f"{base_prompt}, {{note}}" if base_prompt else "{note}"
    base_negative = (
        sidecar.negative_prompt
        if sidecar and sidecar.negative_prompt is not None
        else rule.negative_prompt
    )
    if brief is not None:
        base_prompt, base_negative = _brief_prompts(rule, brief)
        finder.sidecar_references, finder.listed_by = list(brief.references), "brief"
    companion_files = companions or {}
    units: list[Unit] = []
    for index, step in enumerate(rule.steps):
        takes_brief = brief is not None and rule.input_of(index) == "source"
        seeds = (
            _brief_seeds(step, brief, rng) if takes_brief and brief else _seeds(step, sidecar, rng)
        )
        step_prompt = step.prompt if step.prompt is not None else base_prompt
        negative = step.negative_prompt if step.negative_prompt is not None else base_negative
        params = step.backend_params()
        if sidecar and sidecar.steps is not None:
            params["steps"] = sidecar.steps
        watermark = params.get("watermark")
        if isinstance(watermark, str):
            params["watermark"] = finder.one(step, watermark, "watermark") or watermark
        mask = step.mask
        if mask not in (None, "sidecar", "alpha"):
            mask = finder.one(step, mask, "mask") or mask
        step_references = finder.references(step, brief_references=takes_brief)
        step_companions = [f for name in step.companions for f in companion_files.get(name, [])]
        for profile in step.profiles:
            base_id = step.name if step.models is None else f"{step.name}:{profile}"
            for variation in step.variations:
                own = {**said, **variation.values} if variation.values else said
                prompt = variation.prompt if variation.prompt is not None else step_prompt
                units.append(
                    Unit(
                        id=base_id if variation.id is None else f"{base_id}@{variation.id}",
                        name=step.name,
                        model=profile,
                        input=rule.input_of(index),
                        pick=step.pick,
                        prompt=render(prompt, f"step {step.name!r} prompt", own),
                        negative_prompt=render(negative, f"step {step.name!r} negative_prompt", own)
                        if negative
                        else None,
                        seeds=seeds,
                        params=params,
                        size=brief.size if takes_brief and brief and brief.size else step.size,
                        max_side=step.max_side,
                        references=step_references,
                        mask=mask,
                        video_format=step.video_format,
                        variation=variation.id,
                        companions=step_companions,
                    )
                )
    # The rule's prompt as the sheet shows it: prompt_matrix names stay as written ({mood}).
    matrix = rule.matrix_variables() - variables.keys()
    shown = {**said, **{n: f"{{{n}}}" for n in matrix}} if matrix else said
    prompt = render(base_prompt, "prompt", shown)
    negative_prompt = render(base_negative, "negative_prompt", shown) if base_negative else None
    identity = finder.identity(extra_content)
    companion_hashes = [f.sha256 for files in companion_files.values() for f in files]
    if companion_hashes:
        identity = "\0".join([identity or "", "companions", *companion_hashes])
    return Plan(
        rule=rule.name,
        digest=rule.digest(),
        sha256=sha256,
        # A brief's row is its own work: the row's content, not the whole file's bytes.
        content=content_id(brief.sha256 if brief else sha256, sidecar, identity),
        sidecar=sidecar.ref if sidecar else None,
        arrival=ArrivalRecord(
            source=arrival.source,
            key=arrival.key,
            uri=arrival.uri,
            size=arrival.size,
            etag=arrival.etag,
        ),
        vars=variables,  # validation copies it
        prompt=prompt,
        negative_prompt=negative_prompt,
        sink=rule.output.sink,
        path=rule.path_template,
        format=rule.output.format,
        quality=rule.output.quality,
        keep_icc=rule.output.keep_icc,
        on_success=rule.output.on_success,
        quarantine=rule.output.quarantine,
        daily_budget=rule.daily_budget,
        animated=rule.match.animated,
        processed_dir=rule.output.processed_dir,
        manifest=_per_source_path(rule.manifest_template, variables, sha256),
        sheet=_per_source_path(rule.sheet_template, variables, sha256),
        units=units,
        error=error or (brief.error if brief else None) or _joined(render.errors + finder.errors),
        brief=BriefRef(row=brief.id, line=brief.line, prompt=brief.prompt) if brief else None,
    )


@functools.lru_cache(maxsize=4)
def _date(second: int) -> str:
    """``{date}``: the local date at ``second`` (a burst plans thousands in the same one)."""
    return time.strftime("%Y-%m-%d", time.localtime(second))


def _brief_prompts(rule: Rule, brief: BriefRow) -> tuple[str, str | None]:
    """A brief row's prompt and negative prompt are plain text (``{50% off}`` is not a
    template): they replace the rule's, unless the rule's prompt names ``{brief}`` to wrap
    the row's text in its own words."""
    try:
        combines = "brief" in templates.fields(rule.prompt)
    except templates.TemplateError:
        combines = False
    prompt = rule.prompt if combines else _literal(brief.prompt)
    negative = _literal(brief.negative_prompt) if brief.negative_prompt else rule.negative_prompt
    return prompt, negative


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _brief_seeds(step: Step, brief: BriefRow, rng: random.Random) -> list[int]:
    """A brief row's ``count`` images (else the step's variants), from its ``seed`` if set."""
    if brief.seed is None and brief.count is None and step.seeds is not None:
        return list(step.seeds)
    count = brief.count or step.variants
    base = brief.seed if brief.seed is not None else step.seed
    if base is None:
        base = rng.randrange(2**31)
    return [(base + k) % 2**32 for k in range(count)]


def _base_prompt(rule: Rule, sidecar: Sidecar | None) -> str:
    """The prompt template before step overrides. A ``.txt`` sidecar is plain text: it
    replaces the rule's prompt as a literal (its braces are not template syntax), unless the
    rule's prompt uses ``{sidecar}`` to combine the two. A JSON/YAML sidecar's ``prompt`` is
    a template, like the rule's."""
    if sidecar is None or sidecar.prompt is None:
        return rule.prompt
    if sidecar.text is None:
        return sidecar.prompt
    try:
        combines = "sidecar" in templates.fields(rule.prompt)
    except templates.TemplateError:
        combines = False
    return rule.prompt if combines else sidecar.text.replace("{", "{{").replace("}", "}}")


def _seeds(step: Step, sidecar: Sidecar | None, rng: random.Random) -> list[int]:
    """One seed per variant: the sidecar's base seed, the step's list, or base + k."""
    if sidecar and sidecar.seed is not None and step.seeds is None:
        return [(sidecar.seed + k) % 2**32 for k in range(step.variants)]
    if step.seeds is not None:
        return list(step.seeds)
    base = step.seed if step.seed is not None else rng.randrange(2**31)
    return [(base + k) % 2**32 for k in range(step.variants)]


class _Renderer:
    """Renders a plan's templates, collecting every unknown variable instead of stopping at
    the first, so the plan's error names them all (the template stays unrendered)."""

    def __init__(self, variables: Mapping[str, Any]):
        self.variables = variables
        self.errors: list[str] = []

    def __call__(self, text: str, where: str, variables: Mapping[str, Any] | None = None) -> str:
        try:
            return templates.render(text, self.variables if variables is None else variables)
        except templates.TemplateError as exc:
            self.errors.append(f"{where}: {exc}")
            return text

    @property
    def error(self) -> str | None:
        return _joined(self.errors)


def _joined(errors: list[str]) -> str | None:
    return "; ".join(dict.fromkeys(errors)) or None
