"""Task ``img2img``: an input image plus a prompt, through ``diffusers.AutoPipelineForImage2Image``.

Request params (all optional):

- ``strength``  (0, 1], default 0.5: how far from the input the result may move;
- ``steps``     num_inference_steps >= 1, default 2; ``int(steps * strength)`` are run;
- ``guidance``  guidance_scale, default 0.0 (turbo models are distilled without guidance);
  above 1 the request's ``negative_prompt`` is used.

Every input image is run with every seed; outputs are input-major (image 0 with each seed,
then image 1 ...). Each output has its own ``torch.Generator`` seeded with its seed, so a
variant is reproducible alone: seeds ``[5]`` give the second output of seeds ``[4, 5]``
(within floating-point tolerance, since batching changes the summation order). Outputs of
the same size are batched into one pipeline call, with prompts and images passed
pre-expanded so that output k is exactly (image, seed) k.

Spec options: ``max_batch`` (default 8) outputs per pipeline call; ``variant`` (e.g.
``fp16``) for hub weights; ``generator_device`` (default ``cpu``: the same seed gives the
same noise on every device); ``loras``, ``vae_tiling``, ``vae_slicing`` (see
:func:`backends.runtime.loading.configure`) and ``cpu_offload`` (see
:mod:`backends.runtime.placement`).

Works with SD, SDXL and FLUX.1 pipelines (``AutoPipelineForImage2Image`` picks the class
from ``model_index.json``). Pipelines whose ``__call__`` takes ``height``/``width`` (FLUX)
are given the input's size, so outputs keep the input's size for every model; with
``vae_tiling`` that holds up to 2048 px.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from backends.base import InvalidRequest, Request, Result
from backends.checks import check_request
from backends.pipeline import PipelineBackend
from backends.runtime.imports import require

DEFAULTS = {"strength": 0.5, "steps": 2, "guidance": 0.0}
SIZE_MULTIPLE = 8
MAX_SEED = 2**64


class Img2ImgBackend(PipelineBackend):
    task: ClassVar[str] = "img2img"
    pipeline_class: ClassVar[str] = "AutoPipelineForImage2Image"

    def validate(self, request: Request) -> None:
        params(request)
        check_request("img2img", request, size_multiple=SIZE_MULTIPLE)

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        torch = require("torch", self.task)
        strength, steps, guidance = params(request)
        gen_device = self.spec.option("generator_device", "cpu")
        max_batch = max(1, int(self.spec.option("max_batch", 8)))

        # (image index, seed) per output, input-major; batched by image size.
        outputs: list[Any] = [None] * (len(request.images) * len(request.seeds))
        batches = self.batches(request, max_batch)
        seconds = 0.0
        for batch in batches:
            images = [request.images[k // len(request.seeds)].convert("RGB") for k in batch]
            seeds = [int(request.seeds[k % len(request.seeds)]) for k in batch]
            generators = [torch.Generator(device=gen_device).manual_seed(s) for s in seeds]
            kwargs: dict[str, Any] = {
                "prompt": [request.prompt] * len(batch),
                "image": images,
                "strength": strength,
                "num_inference_steps": steps,
                "guidance_scale": guidance,
                "generator": generators,
                "num_images_per_prompt": 1,
                "output_type": "pil",
            }
            if request.negative_prompt and guidance > 1:
                kwargs["negative_prompt"] = [request.negative_prompt] * len(batch)
            kwargs.update(self._extra_kwargs(request))
            if "height" in self._call_args:
                # FLUX img2img would otherwise resize every input to its default 1024 px.
                kwargs["width"], kwargs["height"] = images[0].size
            sequence = self.spec.option("max_sequence_length")
            if sequence is not None and "max_sequence_length" in self._call_args:
                kwargs["max_sequence_length"] = int(sequence)  # FLUX.1-schnell: 256
            result, took = self.call(**kwargs)
            seconds += took
            for k, image in zip(batch, result.images, strict=True):
                outputs[k] = image.convert("RGB")
        return Result(
            images=outputs,
            seconds=seconds,
            info=self.info(
                strength=strength,
                steps=steps,
                denoising_steps=denoising_steps(self._pipe, steps, strength),
                guidance=guidance,
                calls=len(batches),
            ),
        )

    def _loaded(self) -> None:
        self._call_args = _call_parameters(self._pipe)

    def _prepare(self, pipe: Any) -> Any:
        """Subclasses' hook: change the loaded pipeline before it is placed on the device."""
        return pipe

    def _extra_kwargs(self, request: Request) -> dict[str, Any]:
        """Subclasses' hook: more keyword arguments for every pipeline call of ``request``."""
        return {}


def denoising_steps(pipe: Any, steps: int, strength: float) -> int:
    """The steps the pipeline really runs: SD/SDXL run ``int(steps * strength)``; FLUX's
    ``get_timesteps`` skips ``int(steps - steps * strength)``, so it runs one more when the
    product is fractional (4 steps x 0.6 strength: SD runs 2, FLUX 3)."""
    if type(pipe).__name__.startswith("Flux"):
        return steps - int(max(steps - min(steps * strength, steps), 0))
    return min(int(steps * strength), steps)


def _call_parameters(pipe: Any) -> frozenset[str]:
    """The keyword arguments the pipeline's ``__call__`` accepts."""
    import inspect

    return frozenset(inspect.signature(type(pipe).__call__).parameters)


def params(request: Request) -> tuple[float, int, float]:
    """(strength, steps, guidance) from the request, or InvalidRequest saying what to change."""
    p = request.params
    strength = _number(p, "strength", float)
    steps = _number(p, "steps", int)
    guidance = _number(p, "guidance", float)
    if not 0.0 < strength <= 1.0:
        raise InvalidRequest(
            f"strength {strength} must be in (0, 1]: 0.3-0.7 keeps the input's layout"
        )
    if steps < 1:
        raise InvalidRequest(f"steps {steps} must be at least 1")
    if guidance < 0:
        raise InvalidRequest(
            f"guidance {guidance} must be >= 0 (0 for turbo models, 5-8 otherwise)"
        )
    if int(steps * strength) < 1:
        need_steps = _ceil_div(1.0, strength)
        raise InvalidRequest(
            f"strength {strength:g} x steps {steps} gives no denoising step: raise steps to at "
            f"least {need_steps} or strength to at least {math.ceil(100 / steps) / 100:g}"
        )
    return strength, steps, guidance


def _number(p: Any, key: str, kind: type) -> Any:
    value = p.get(key, DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{key} must be a number, not {value!r}")
    if kind is int and value != int(value):
        raise InvalidRequest(f"{key} must be a whole number, not {value!r}")
    return kind(value)


def _ceil_div(a: float, b: float) -> int:
    # Smallest n with int(n * b) >= 1, robust to float rounding (0.1 * 10 may not be 1.0).
    n = max(1, math.ceil(a / b - 1e-9))
    while int(n * b) < 1:
        n += 1
    return n


__all__ = ["Img2ImgBackend", "denoising_steps", "params"]
