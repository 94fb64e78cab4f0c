"""Task ``upscale``: the x4 diffusion upscaler (``StableDiffusionUpscalePipeline``).

Every input image is upscaled once per seed; outputs are input-major and exactly 4x the
input's size. Request params (all optional):

- ``steps``        num_inference_steps >= 1, default 75 (the pipeline's documented default);
- ``guidance``     guidance_scale >= 0, default 9.0 (above 1 the negative prompt is used);
- ``noise_level``  0..max_noise_level (350), default 20: noise added to the input first;
  more lets the model invent more detail and keep less of the input.

Inputs' sides must be multiples of 8. Without the ``vae_tiling`` option an output side may
not exceed ``max_output_side`` (option, default 2048: inputs up to 512 px), since decoding a
larger image at once needs tens of GB; with ``vae_tiling`` the VAE decodes tile by tile and
only ``max_output_side`` set explicitly limits it. Outputs of the same size are batched (up
to ``max_batch``, default 4), each with its own seeded generator.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

from backends.base import InvalidRequest, Request, Result
from backends.checks import check_request
from backends.pipeline import PipelineBackend
from backends.runtime.imports import require

# StableDiffusionUpscalePipeline's documented defaults.
DEFAULTS = {"steps": 75, "guidance": 9.0, "noise_level": 20}
SCALE = 4
SIZE_MULTIPLE = 8
MAX_OUTPUT_SIDE = 2048
MAX_NOISE_LEVEL = 350


class UpscaleBackend(PipelineBackend):
    task: ClassVar[str] = "upscale"
    pipeline_class: ClassVar[str] = "StableDiffusionUpscalePipeline"

    def max_output_side(self) -> int | None:
        explicit = self.spec.option("max_output_side")
        if explicit is not None:
            return int(explicit)
        return None if self.spec.option("vae_tiling", False) else MAX_OUTPUT_SIDE

    def validate(self, request: Request) -> None:
        params(request)
        check_request(self.task, request, size_multiple=SIZE_MULTIPLE)
        limit = self.max_output_side()
        for index, image in enumerate(request.images):
            width, height = image.size
            if limit is not None and max(width, height) * SCALE > limit:
                raise InvalidRequest(
                    f"input image {index} is {width}x{height}: x{SCALE} would be "
                    f"{width * SCALE}x{height * SCALE}, over {limit} px: resize the input to at "
                    f"most {limit // SCALE} px on its long side, or turn on the profile's "
                    f"vae_tiling option"
                )

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        torch = require("torch", self.task)
        steps, guidance, noise_level = params(request)
        gen_device = self.spec.option("generator_device", "cpu")
        max_batch = max(1, int(self.spec.option("max_batch", 4)))
        n_seeds = len(request.seeds)
        outputs: list[Any] = [None] * (len(request.images) * n_seeds)
        batches = self.batches(request, max_batch)
        seconds = 0.0
        for batch in batches:
            kwargs: dict[str, Any] = {
                "prompt": [request.prompt] * len(batch),
                "image": [request.images[k // n_seeds].convert("RGB") for k in batch],
                "num_inference_steps": steps,
                "guidance_scale": guidance,
                "noise_level": noise_level,
                "generator": [
                    torch.Generator(device=gen_device).manual_seed(int(request.seeds[k % n_seeds]))
                    for k in batch
                ],
                "num_images_per_prompt": 1,
                "output_type": "pil",
            }
            if request.negative_prompt and guidance > 1:
                kwargs["negative_prompt"] = [request.negative_prompt] * len(batch)
            result, took = self.call(**kwargs)
            seconds += took
            for k, image in zip(batch, result.images, strict=True):
                outputs[k] = image.convert("RGB")
        return Result(
            images=outputs,
            seconds=seconds,
            info=self.info(
                scale=SCALE,
                steps=steps,
                guidance=guidance,
                noise_level=noise_level,
                calls=len(batches),
            ),
        )


def params(request: Request) -> tuple[int, float, int]:
    """(steps, guidance, noise_level) from the request, or InvalidRequest saying what to change."""
    p = request.params
    values = {key: p.get(key, default) for key, default in DEFAULTS.items()}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidRequest(f"{key} must be a number, not {value!r}")
    steps, guidance, noise = values["steps"], values["guidance"], values["noise_level"]
    if steps != int(steps) or steps < 1:
        raise InvalidRequest(f"steps {steps} must be a whole number >= 1 (75 is the default)")
    if guidance < 0:
        raise InvalidRequest(f"guidance {guidance} must be >= 0 (9.0 is the default)")
    if noise != int(noise) or not 0 <= noise <= MAX_NOISE_LEVEL:
        raise InvalidRequest(
            f"noise_level {noise} must be a whole number in [0, {MAX_NOISE_LEVEL}] "
            "(20 keeps the input; 100+ invents detail)"
        )
    return int(steps), float(guidance), int(noise)


__all__ = ["UpscaleBackend", "params"]
