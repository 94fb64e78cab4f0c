"""Planning: one matching rule + the facts gathered about one arrival -> a typed ``Plan``.

Pure: it reads no file. Intake gathers the bytes' hash, the header facts, the sidecar, the
mask's hash and the resolved references, and hands them here; the plan carries the rendered
prompts, the seeds (drawn here, once), the references and the output paths' templates.
``output_path`` renders one output's name from a plan and one of its units.
"""

from __future__ import annotations

import hashlib
import random
import time
import unicodedata
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from daemon.errors import OutputError
from daemon.rules import templates
from daemon.rules.match import ImageFacts
from daemon.rules.schema import Rule, Step
from daemon.rules.sidecars import Sidecar
from daemon.types import Arrival, ArrivalRecord, Plan, ReferenceFile, Unit


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
    }


def plan_for(
    rule: Rule,
    arrival: Arrival,
    sha256: str,
    *,
    facts: ImageFacts | None = None,
    sidecar: Sidecar | None = None,
    references: Mapping[str, list[ReferenceFile]] | None = None,
    extra_content: str | None = None,
    error: str | None = None,
    rng: random.Random | None = None,
) -> Plan:
    """Everything needed to run ``rule`` on ``arrival``, as a typed, JSON-able ``Plan``.

    Random seeds are drawn here, once, so retries and restarts reuse them and the
    manifest can record them. ``references`` maps step names to their resolved reference
    files; ``extra_content`` (the mask's hash) joins the bytes and the sidecar in the plan's
    content identity. A variable no one defines makes the plan carry an ``error`` naming
    it: its jobs then fail with that reason instead of running. ``error``, when given (a
    broken sidecar), is that reason instead.
    """
    rng = rng or random.SystemRandom()
    variables: dict[str, Any] = {
        **rule.vars,
        **(sidecar.vars if sidecar else {}),
        **source_variables(rule, arrival, facts),
    }
    if sidecar and sidecar.text is not None:
        variables["sidecar"] = sidecar.text
    render = _Renderer(variables)
    base_prompt = _base_prompt(rule, sidecar)
    base_negative = (
        sidecar.negative_prompt
        if sidecar and sidecar.negative_prompt is not None
        else rule.negative_prompt
    )
    units: list[Unit] = []
    for index, step in enumerate(rule.steps):
        seeds = _seeds(step, sidecar, rng)
        prompt = step.prompt if step.prompt is not None else base_prompt
        negative = step.negative_prompt if step.negative_prompt is not None else base_negative
        params = step.backend_params()
        if sidecar and sidecar.steps is not None:
            params["steps"] = sidecar.steps
        mask = step.mask
        if mask not in (None, "sidecar", "alpha"):
            mask = render(mask, f"steps[{index}].mask")
        for profile in step.profiles:
            units.append(
                Unit(
                    id=step.name if step.models is None else f"{step.name}:{profile}",
                    name=step.name,
                    model=profile,
                    input=rule.input_of(index),
                    pick=step.pick,
                    prompt=render(prompt, f"step {step.name!r} prompt"),
                    negative_prompt=render(negative, f"step {step.name!r} negative_prompt")
                    if negative
                    else None,
                    seeds=seeds,
                    params=params,
                    size=step.size,
                    max_side=step.max_side,
                    references=list((references or {}).get(step.name, [])),
                    mask=mask,
                    video_format=step.video_format,
                )
            )
    prompt = render(base_prompt, "prompt")
    negative_prompt = render(base_negative, "negative_prompt") if base_negative else None
    return Plan(
        rule=rule.name,
        digest=rule.digest(),
        sha256=sha256,
        content=content_id(sha256, sidecar, extra_content),
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
        error=error or render.error,
    )


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

    def __call__(self, text: str, where: str) -> str:
        try:
            return templates.render(text, self.variables)
        except templates.TemplateError as exc:
            self.errors.append(f"{where}: {exc}")
            return text

    @property
    def error(self) -> str | None:
        return "; ".join(dict.fromkeys(self.errors)) or None


def _per_source_path(template: str, variables: Mapping[str, Any], sha256: str) -> str:
    safe = {k: path_safe(v, keep_slashes=k == "dir") for k, v in variables.items()}
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
    variables = {
        **plan.vars,
        "step": unit.name,
        "model": unit.model,
        "variant": variant,
        "seed": seed,
        "ext": ext,
    }
    safe = {k: path_safe(v, keep_slashes=k == "dir") for k, v in variables.items()}
    path = templates.safe_relpath(templates.render(template, safe))
    # Placed beside a folder another input owns: its outputs follow the manifest there.
    return plan.placed.apply(path) if plan.placed else path
