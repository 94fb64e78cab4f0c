"""Task ``text2img``: a prompt alone, through ``diffusers.AutoPipelineForText2Image``.

The task of a brief without a photo (``*.brief.yaml`` / ``*.brief.csv``): the request has no
input image; its ``params`` say how big the outputs are. It loads through the same
:class:`~backends.pipeline.PipelineBackend` path as ``img2img`` (local folders, hub ids,
``random:NAME``), so the img2img profiles' weights serve here too: ``AutoPipelineForText2Image``
reads an SD, SDXL or FLUX.1 ``model_index.json`` (img2img or not) and builds the text-to-image
class of the same family.

Request params (all optional but the size):

- ``width``, ``height``  the output size (the daemon fits it to the model's multiple);
- ``steps``     num_inference_steps >= 1, default 2 (turbo models);
- ``guidance``  guidance_scale >= 0, default 0.0; above 1 the ``negative_prompt`` is used.

One output per seed, each with its own ``torch.Generator``, so a variant is reproducible alone.
Outputs are batched up to the spec option ``max_batch`` (default 8) per pipeline call. Spec
options are img2img's (``variant``, ``generator_device``, ``max_sequence_length``, ``loras``,
``vae_tiling``, ``cpu_offload``).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from backends.base import InvalidRequest, Request, Result
from backends.checks import MAX_SEED
from backends.pipeline import PipelineBackend
from backends.runtime.imports import require

DEFAULT_STEPS = 2
DEFAULT_GUIDANCE = 0.0
DEFAULT_SIDE = 512
SIZE_MULTIPLE = 8


class Text2ImgBackend(PipelineBackend):
    task: ClassVar[str] = "text2img"
    pipeline_class: ClassVar[str] = "AutoPipelineForText2Image"

    def validate(self, request: Request) -> None:
        check(request, int(self.spec.option("size_multiple", SIZE_MULTIPLE)))

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        torch = require("torch", self.task)
        width, height, steps, guidance = check(
            request, int(self.spec.option("size_multiple", SIZE_MULTIPLE))
        )
        gen_device = self.spec.option("generator_device", "cpu")
        max_batch = max(1, int(self.spec.option("max_batch", 8)))
        seeds = [int(s) for s in request.seeds]
        outputs: list[Any] = []
        seconds, calls = 0.0, 0
        for start in range(0, len(seeds), max_batch):
            batch = seeds[start : start + max_batch]
            kwargs: dict[str, Any] = {
                "prompt": [request.prompt] * len(batch),
                "width": width,
                "height": height,
                "num_inference_steps": steps,
                "guidance_scale": guidance,
                "generator": [torch.Generator(device=gen_device).manual_seed(s) for s in batch],
                "num_images_per_prompt": 1,
                "output_type": "pil",
            }
            if request.negative_prompt and guidance > 1:
                kwargs["negative_prompt"] = [request.negative_prompt] * len(batch)
            sequence = self.spec.option("max_sequence_length")
            if sequence is not None and "max_sequence_length" in self._call_args:
                kwargs["max_sequence_length"] = int(sequence)
            result, took = self.call(**kwargs)
            seconds, calls = seconds + took, calls + 1
            outputs += [image.convert("RGB") for image in result.images]
        return Result(
            images=outputs,
            seconds=seconds,
            info=self.info(steps=steps, guidance=guidance, width=width, height=height, calls=calls),
        )

    def _loaded(self) -> None:
        self._call_args = frozenset(inspect.signature(type(self._pipe).__call__).parameters)


def check(request: Request, multiple: int = SIZE_MULTIPLE) -> tuple[int, int, int, float]:
    """(width, height, steps, guidance) of a prompt-only request, or InvalidRequest saying
    what to change."""
    if request.images:
        raise InvalidRequest(
            f"text2img makes images from a prompt alone, but was given {len(request.images)}"
            " input image(s): use an img2img profile for steps that take a photo"
        )
    if request.references:
        raise InvalidRequest(
            "text2img takes no reference images: drop the brief's references, or use a"
            " profile that takes them (a hosted model such as nano-banana-pro)"
        )
    if request.mask is not None:
        raise InvalidRequest("text2img takes no mask: there is no input image to mask")
    if not (request.prompt or "").strip():
        raise InvalidRequest("text2img needs a prompt: the brief's prompt is empty")
    if not request.seeds:
        raise InvalidRequest("text2img needs at least one seed (one output per seed)")
    for seed in request.seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
            raise InvalidRequest(f"seed {seed!r} must be an integer in [0, 2**64)")
    p = request.params
    width = _whole(p, "width", DEFAULT_SIDE)
    height = _whole(p, "height", DEFAULT_SIDE)
    for name, side in (("width", width), ("height", height)):
        if side < multiple or side % multiple:
            raise InvalidRequest(
                f"{name} {side} must be a multiple of {multiple} (at least {multiple}):"
                f" use {max(multiple, side // multiple * multiple)}"
            )
    steps = _whole(p, "steps", DEFAULT_STEPS)
    if steps < 1:
        raise InvalidRequest(f"steps {steps} must be at least 1")
    guidance = p.get("guidance", DEFAULT_GUIDANCE)
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) or guidance < 0:
        raise InvalidRequest(f"guidance {guidance!r} must be a number >= 0 (0 for turbo models)")
    return width, height, steps, float(guidance)


def _whole(p: Any, key: str, default: int) -> int:
    value = p.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidRequest(f"{key} must be a whole number, not {value!r}")
    return int(value)


__all__ = ["Text2ImgBackend", "check"]
