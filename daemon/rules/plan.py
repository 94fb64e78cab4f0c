"""Planning: one matching rule + the facts gathered about one arrival -> a typed ``Plan``.

Intake gathers the bytes' hash, the header facts and metadata, the sidecar and the mask's
hash, and hands them here with a :class:`~daemon.rules.references.RuleFiles` finder; the plan
carries the rendered prompts (one unit per model and prompt variation), the seeds (drawn here,
once), the references, mask and watermark this arrival's templates name (found through the
finder, confined to their folders) and the output paths' templates. ``output_path`` renders
one output's name from a plan and one of its units.

Values from a file (its name, folder, sidecar, metadata) enter path templates path-safe ("/"
becomes "_" except in ``{dir}``) and glob-escaped, and the rendered path is checked again, so
a hostile name can neither widen a glob nor leave a folder.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
import time
import unicodedata
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from daemon.errors import OutputError
from daemon.rules import templates
from daemon.rules.match import ImageFacts
from daemon.rules.metadata import ImageMetadata, empty_variables
from daemon.rules.references import PathFault, RuleFiles, split_folder
from daemon.rules.schema import SIDECAR_REFERENCES, Rule, Step
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


def source_variables(
    rule: Rule, arrival: Arrival, facts: ImageFacts | None = None, now: float | None = None
) -> dict[str, Any]:
    """The built-in template variables (``SOURCE_VARS``) for ``arrival`` under ``rule``."""
    key = PurePosixPath(arrival.key)
    parts = key.parts[:-1]
    ext = key.suffix.lstrip(".").lower()
    return {
        "stem": key.stem,
        "name": key.name,
        "ext": ext,
        "source_ext": ext,
        "dir": "/".join(parts),
        "folder": parts[-1] if parts else "",
        "top_folder": parts[0] if parts else "",
        "source": arrival.source,
        "rule": rule.name,
        "date": time.strftime("%Y-%m-%d", time.localtime(now)),
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
                own = {**said, **{k: v for k, v in variation.values.items()}}
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
    shown = {**said, **{n: f"{{{n}}}" for n in rule.matrix_variables() - set(variables)}}
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
        vars=dict(variables),
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


def _glob_escaped(value: Any) -> Any:
    """A value put into a glob pattern as itself: ``*``, ``?`` and ``[`` match only
    themselves (a file named ``*.png`` must not widen ``refs/{stem}/*.png``)."""
    if not isinstance(value, str):
        return value
    return "".join(f"[{c}]" if c in "*?[" else c for c in value)


class _Finder:
    """The files one arrival's templates name (references, mask, watermark), through the
    :class:`RuleFiles` finder: rendered with path-safe values, then confined. Every fault is
    collected (the plan's error) and every hash kept (the plan's content identity)."""

    def __init__(
        self,
        rule: Rule,
        files: RuleFiles | Mapping[str, list[ReferenceFile]] | None,
        sidecar: Sidecar | None,
        variables: Mapping[str, Any],
    ):
        self.rule = rule
        self.files = files
        self.sidecar_references: list[str] = list(getattr(sidecar, "references", None) or [])
        self.listed_by = "sidecar"  # who listed sidecar_references ("brief" for a brief row)
        self.variables = variables
        self.errors: list[str] = []
        self.hashes: list[str] = []

    @functools.cached_property
    def safe(self) -> dict[str, Any]:
        """The variables as path pieces (made only for a rule that names a file)."""
        return {k: path_safe(v, keep_slashes=k == "dir") for k, v in self.variables.items()}

    def _where(self, step: Step) -> str:
        return f"rule {self.rule.name!r} step {step.name!r}"

    def _render(self, step: Step, template: str, what: str, glob: bool) -> str | None:
        values = {k: _glob_escaped(v) for k, v in self.safe.items()} if glob else self.safe
        try:
            return templates.render(template, values)
        except templates.TemplateError as exc:
            self.errors.append(f"{self._where(step)}: {what} {template!r}: {exc}")
            return None

    def references(self, step: Step, *, brief_references: bool = False) -> list[ReferenceFile]:
        found: list[ReferenceFile] = []
        if isinstance(self.files, Mapping):  # resolved by the caller (static patterns)
            found = list(self.files.get(step.name, []))
            self.hashes += [f.sha256 for f in found]
            return found
        patterns = list(step.references)
        if brief_references and self.sidecar_references and SIDECAR_REFERENCES not in patterns:
            patterns.append(SIDECAR_REFERENCES)  # a brief row's references go to its steps
        for pattern in patterns:
            listed = self.sidecar_references if pattern == SIDECAR_REFERENCES else [pattern]
            what = f"{self.listed_by} references" if pattern == SIDECAR_REFERENCES else "references"
            for written in listed:
                try:  # the folder is chosen before rendering: no value can pick it
                    folder, rest = split_folder(written, self._dirs)
                except PathFault as exc:
                    self.errors.append(f"{self._where(step)}: {exc}")
                    continue
                # A sidecar's list is literal text (as a .txt sidecar is), not a template.
                from_sidecar = pattern == SIDECAR_REFERENCES
                rendered = rest if from_sidecar else self._render(step, rest, what, glob=True)
                if rendered is not None:
                    found += self._glob(step, folder, rendered, written, what)
        self.hashes += [f.sha256 for f in found]
        return found

    @property
    def _dirs(self) -> Mapping[str, Any]:
        return self.files.reference_dirs if isinstance(self.files, RuleFiles) else {}

    def _glob(
        self, step: Step, folder: str | None, pattern: str, shown: str, what: str
    ) -> list[ReferenceFile]:
        if not isinstance(self.files, RuleFiles):
            self.errors.append(f"{self._where(step)}: {what}: no rules folder to look in")
            return []
        written = shown.partition(":")[2] if folder else shown
        try:
            found = self.files.glob(folder, pattern, written)
        except PathFault as exc:
            self.errors.append(f"{self._where(step)}: {exc}")
            return []
        if not found:
            shown_as = repr(pattern) if pattern == written else f"{pattern!r} (from {written!r})"
            where = f"reference folder {folder!r}" if folder else "the rules folder"
            self.errors.append(
                f"{self._where(step)}: {what} {shown_as} match no file in {where}"
                " (add the files, then drop the photo again or `darkroom reprocess`)"
            )
        return found

    def one(self, step: Step, template: str, what: str) -> str | None:
        """The file a mask or watermark template names for this arrival (its path), or None
        with the fault recorded."""
        if not isinstance(self.files, RuleFiles):
            self.errors.append(f"{self._where(step)}: {what} {template!r}: no rules folder")
            return None
        try:
            folder, rest = split_folder(template, self.files.reference_dirs)
        except PathFault as exc:
            self.errors.append(f"{self._where(step)}: {exc}")
            return None
        rendered = self._render(step, rest, what, glob=False)
        if rendered is None:
            return None
        try:
            found = self.files.one(folder, rendered, template, what)
        except PathFault as exc:
            self.errors.append(f"{self._where(step)}: {exc}")
            return None
        self.hashes.append(found.sha256)
        return found.path

    def identity(self, extra: str | None) -> str | None:
        """The content identity's extra part: the sidecar mask's hash and every found file's
        (unchanged for a plan that names no file, so older plans keep their identity)."""
        if not self.hashes:
            return extra
        return "\0".join([extra or "", *self.hashes])


def _per_source_path(template: str, variables: Mapping[str, Any], sha256: str) -> str:
    used = templates.fields(template)  # only what the template names is made path-safe
    safe = {k: path_safe(v, keep_slashes=k == "dir") for k, v in variables.items() if k in used}
    try:
        return templates.safe_relpath(templates.render(template, safe))
    except OutputError:
        # A name that cannot be a path still needs a place for its failure report.
        return f"{variables['rule']}/_unplaceable/{sha256[:16]}/{PurePosixPath(template).name}"


def content_id(sha256: str, sidecar: Sidecar | None, extra: str | None = None) -> str:
    """The identity of what is processed: the image's bytes, plus its sidecar's (and mask's)
    if any, so that editing ``photo.txt`` makes the photo new work."""
    if sidecar is None and extra is None:
        return sha256
    parts = [sha256, sidecar.sha256 if sidecar else "", extra or ""]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


# Output format -> file extension of the written variants.
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def path_safe(value: Any, *, keep_slashes: bool = False) -> Any:
    """A variable's value as a path piece: control and invisible characters (a newline in a
    file name) become "_", and so does "/" except in values that are paths (``dir``)."""
    if not isinstance(value, str):
        return value
    out = "".join("_" if unicodedata.category(c) in ("Cc", "Cf") else c for c in value)
    return out if keep_slashes else out.replace("/", "_").replace("\\", "_")


def output_path(plan: Plan, unit: Unit, variant: int, seed: int, *, video: bool = False) -> str:
    """Where variant ``variant`` (drawn with ``seed``) of ``unit`` goes in the plan's sink."""
    ext = unit.video_format if video else EXTENSIONS[plan.format]
    template = plan.path
    if template.endswith((".png", ".jpg", ".jpeg", ".webp")) and video:
        template = template.rsplit(".", 1)[0] + ".{ext}"
    if unit.variation is None:
        # A step without variations in a rule that has some: no empty "--" in its names.
        for form in ("-{variation}", "_{variation}", "{variation}-", "{variation}"):
            template = template.replace(form, "")
    variables = {
        **plan.vars,
        "step": unit.name,
        "model": unit.model,
        "variant": variant,
        "seed": seed,
        "ext": ext,
        "variation": unit.variation or "",
    }
    safe = {k: path_safe(v, keep_slashes=k == "dir") for k, v in variables.items()}
    path = templates.safe_relpath(templates.render(template, safe))
    # Placed beside a folder another input owns: its outputs follow the manifest there.
    return plan.placed.apply(path) if plan.placed else path
