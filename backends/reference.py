"""Tasks ``ip-adapter`` and ``multi-edit``: outputs steered by reference images.

``ip-adapter`` (:class:`IPAdapterBackend`): SDXL (or SD) img2img with an IP-Adapter. Every
output is the img2img of an input (see :mod:`backends.img2img` for strength, steps,
guidance, seeds and batching) with ``request.references`` (1 to ``max_references``) passed
as the adapter's images. Extra request param: ``ip_adapter_scale`` (>= 0, default 0.6: how
strongly the references steer; 0 ignores them). Spec options: ``ip_adapter`` (repo id,
local folder or ``random:NAME``: where the adapter lives, like ``h94/IP-Adapter``),
``ip_adapter_subfolder`` (``sdxl_models``), ``ip_adapter_weight_name``
(``ip-adapter_sdxl.bin``), ``ip_adapter_image_encoder_folder`` (default ``image_encoder``,
inside the subfolder), ``max_references`` (default 4).

``multi-edit`` (:class:`MultiImageEditBackend`): Qwen-Image-Edit-Plus
(``QwenImageEditPlusPipeline``): an instruction edit whose image list is the input followed
by the references, at most ``max_images`` (option, default 3: the model's limit) in all.
Params: ``steps`` (default 40), ``guidance`` (true CFG scale, default 4.0; above 1 the
negative prompt, or " ", is used). One pipeline call per output (the pipeline takes one
prompt per call); outputs keep the input's size, which must be a multiple of 16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from backends.base import InvalidRequest, ModelUnavailable, Request, Result
from backends.checks import check_request, check_sizes
from backends.img2img import Img2ImgBackend
from backends.pipeline import PipelineBackend
from backends.random_models import resolve_model_dir
from backends.runtime import hub
from backends.runtime.imports import require

DEFAULT_IP_ADAPTER_SCALE = 0.6
DEFAULT_MAX_REFERENCES = 4
NO_REFERENCES = "add references: to the step (one or more images that steer identity or style)"


class IPAdapterBackend(Img2ImgBackend):
    task: ClassVar[str] = "ip-adapter"

    def validate(self, request: Request) -> None:
        super().validate(request)
        ip_adapter_scale(request)
        if not request.references:
            raise InvalidRequest(f"{self.task} needs reference images: {NO_REFERENCES}")
        limit = int(self.spec.option("max_references", DEFAULT_MAX_REFERENCES))
        if len(request.references) > limit:
            raise InvalidRequest(
                f"{self.task} takes at most {limit} reference images, got "
                f"{len(request.references)}: keep the most typical ones (or raise the "
                f"profile's max_references)"
            )

    def _prepare(self, pipe: Any) -> Any:
        source = self.spec.option("ip_adapter")
        if not source:
            raise ModelUnavailable(
                f"profile for {self.spec.model} needs the option ip_adapter (where the "
                f"IP-Adapter weights are, e.g. h94/IP-Adapter with ip_adapter_subfolder "
                f"sdxl_models and ip_adapter_weight_name ip-adapter_sdxl.bin)"
            )
        location = resolve_model_dir(str(source), self.cache_dir)
        subfolder = self.spec.option("ip_adapter_subfolder", "")
        weight_name = self.spec.option("ip_adapter_weight_name")
        if not weight_name:
            raise ModelUnavailable(
                f"option ip_adapter {source}: set ip_adapter_weight_name to the adapter's file"
            )
        kwargs: dict[str, Any] = {
            "subfolder": subfolder,
            "weight_name": weight_name,
            "image_encoder_folder": self.spec.option(
                "ip_adapter_image_encoder_folder", "image_encoder"
            ),
        }
        if not Path(location).is_dir():
            if self.spec.option("ip_adapter_revision"):
                kwargs["revision"] = self.spec.option("ip_adapter_revision")
            if hub.hf_cache_dir():
                kwargs["cache_dir"] = hub.hf_cache_dir()
            if hub.offline():
                kwargs["local_files_only"] = True
        with hub.quiet_progress():
            try:
                pipe.load_ip_adapter(location, **kwargs)
            except (OSError, ValueError) as exc:
                raise ModelUnavailable(
                    f"IP-Adapter {source} ({subfolder}/{weight_name}) could not be loaded: "
                    f"download it (`hf download {source}`) or point the option ip_adapter at a "
                    f"local folder holding {subfolder or '.'}/{weight_name} and its image "
                    f"encoder ({type(exc).__name__}: {exc})"
                ) from exc
        self._ip_adapter_location = location
        return pipe

    def _extra_kwargs(self, request: Request) -> dict[str, Any]:
        self._pipe.set_ip_adapter_scale(ip_adapter_scale(request))
        # One adapter: a list of one entry, that entry the list of its reference images.
        return {"ip_adapter_image": [[im.convert("RGB") for im in request.references]]}

    def run(self, request: Request) -> Result:
        result = super().run(request)
        result.info.update(
            ip_adapter=self.spec.option("ip_adapter"),
            ip_adapter_scale=ip_adapter_scale(request),
            references=len(request.references),
        )
        return result


def ip_adapter_scale(request: Request) -> float:
    value = request.params.get("ip_adapter_scale", DEFAULT_IP_ADAPTER_SCALE)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidRequest(
            f"ip_adapter_scale {value!r} must be a number >= 0 (0.4-0.8 is typical; "
            "0 ignores the references)"
        )
    return float(value)


# --- multi-edit -------------------------------------------------------------------------------

MULTI_EDIT_DEFAULTS = {"steps": 40, "guidance": 4.0}
DEFAULT_MAX_IMAGES = 3
MULTI_EDIT_SIZE_MULTIPLE = 16


class MultiImageEditBackend(PipelineBackend):
    """Qwen-Image-Edit-Plus: the input and the references are one image list per call."""

    task: ClassVar[str] = "multi-edit"
    pipeline_class: ClassVar[str] = "DiffusionPipeline"

    @property
    def max_images(self) -> int:
        return int(self.spec.option("max_images", DEFAULT_MAX_IMAGES))

    def validate(self, request: Request) -> None:
        multi_edit_params(request)
        check_request(self.task, request)
        total = 1 + len(request.references)
        if total > self.max_images:
            raise InvalidRequest(
                f"{self.task} takes at most {self.max_images} images per edit (the input plus "
                f"{self.max_images - 1} references), got the input plus "
                f"{len(request.references)} references: drop "
                f"{total - self.max_images} reference(s) from the step"
            )
        check_sizes(self.task, request, MULTI_EDIT_SIZE_MULTIPLE)

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        torch = require("torch", self.task)
        steps, guidance = multi_edit_params(request)
        references = [im.convert("RGB") for im in request.references]
        gen_device = self.spec.option("generator_device", "cpu")
        outputs: list[Any] = []
        seconds = 0.0
        for image in request.images:
            image = image.convert("RGB")
            width, height = image.size
            for seed in request.seeds:
                kwargs: dict[str, Any] = {
                    "image": [image, *references],
                    "prompt": request.prompt,
                    "num_inference_steps": steps,
                    "true_cfg_scale": guidance,
                    "height": height,
                    "width": width,
                    "num_images_per_prompt": 1,
                    "generator": torch.Generator(device=gen_device).manual_seed(int(seed)),
                    "output_type": "pil",
                }
                if guidance > 1:
                    kwargs["negative_prompt"] = request.negative_prompt or " "
                result, took = self.call(**kwargs)
                seconds += took
                outputs.append(result.images[0].convert("RGB"))
        return Result(
            images=outputs,
            seconds=seconds,
            info=self.info(
                steps=steps, guidance=guidance, references=len(references), calls=len(outputs)
            ),
        )


def multi_edit_params(request: Request) -> tuple[int, float]:
    p = request.params
    steps = p.get("steps", MULTI_EDIT_DEFAULTS["steps"])
    guidance = p.get("guidance", MULTI_EDIT_DEFAULTS["guidance"])
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or steps != int(steps):
        raise InvalidRequest(f"steps must be a whole number, not {steps!r}")
    if steps < 1:
        raise InvalidRequest(f"steps {steps} must be at least 1")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or guidance < 0:
        raise InvalidRequest(f"guidance {guidance!r} must be a number >= 0 (4.0 is typical)")
    return int(steps), float(guidance)


__all__ = ["IPAdapterBackend", "MultiImageEditBackend", "ip_adapter_scale", "multi_edit_params"]
