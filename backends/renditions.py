"""Task ``rendition``: channel formats cut from an image, with an optional watermark. No model.

Request params:

- ``preset``: ``square-1080`` (1080x1080), ``story-1080x1920``, ``banner-1200x628``; or
- ``width`` + ``height``: a custom size (16..8192 px each; they win over ``preset``);
- ``fit``: ``crop`` (default: scale to cover, then cut the centre; no saliency) or ``pad``
  (scale to fit inside, then fill the rest with ``background``, default ``#ffffff``: any
  colour Pillow knows, ``#rrggbb`` or a name);
- ``watermark``: path to a logo image (PNG with alpha), placed in the ``watermark_position``
  corner (``bottom-right`` default, ``bottom-left``, ``top-right``, ``top-left``) at
  ``watermark_scale`` of the output's width (default 0.15) and ``watermark_opacity`` (0..1,
  default 0.8), ``watermark_margin`` (fraction of the width, default 0.03) from the edges.

Renditions are deterministic: every seed gives the same image, and one image is returned per
(input, seed), input-major, as the contract says. Output formats are the caller's job.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from backends.base import InvalidRequest, ModelSpec, Request, Result
from backends.checks import check_request

if TYPE_CHECKING:
    from PIL.Image import Image

PRESETS: dict[str, tuple[int, int]] = {
    "square-1080": (1080, 1080),
    "story-1080x1920": (1080, 1920),
    "banner-1200x628": (1200, 628),
}
FITS = ("crop", "pad")
POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")
MIN_SIDE, MAX_SIDE = 16, 8192


class RenditionBackend:
    task: ClassVar[str] = "rendition"

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None:
        self.spec = spec
        self.cache_dir = Path(cache_dir)
        self._logos: dict[tuple[str, int, int], Image] = {}

    def load(self) -> None:
        """Nothing to load."""

    def unload(self) -> None:
        self._logos.clear()

    def validate(self, request: Request) -> None:
        plan(request.params)
        check_request("rendition", request)

    def run(self, request: Request) -> Result:
        self.validate(request)
        started = time.perf_counter()
        p = plan(request.params)
        logo = self._logo(p["watermark"]) if p["watermark"] else None
        outputs: list[Any] = []
        for image in request.images:
            rendition = render(image, p, logo)
            outputs.extend(rendition.copy() for _ in request.seeds)
        return Result(
            images=outputs,
            seconds=time.perf_counter() - started,
            info={
                "model": "none",
                "size": list(p["size"]),
                "preset": p["preset"],
                "fit": p["fit"],
                "watermark": p["watermark"],
            },
        )

    def _logo(self, path: str) -> Image:
        from PIL import Image, UnidentifiedImageError

        file = Path(path).expanduser()
        try:
            stat = file.stat()
            key = (str(file), stat.st_mtime_ns, stat.st_size)
            if key not in self._logos:
                with Image.open(file) as opened:
                    self._logos[key] = opened.convert("RGBA")
        except (OSError, UnidentifiedImageError) as exc:
            raise InvalidRequest(
                f"watermark {path} cannot be read ({type(exc).__name__}: {exc}): point "
                "watermark at a PNG logo with transparency"
            ) from exc
        return self._logos[key]


def plan(params: Any) -> dict[str, Any]:
    """The rendition the params ask for, or InvalidRequest saying what to change."""
    preset = params.get("preset")
    width, height = params.get("width"), params.get("height")
    if (width is None) != (height is None):
        raise InvalidRequest("set both width and height for a custom rendition size, or neither")
    if width is not None:
        for key, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequest(f"{key} must be a whole number of pixels, not {value!r}")
            if not MIN_SIDE <= value <= MAX_SIDE:
                raise InvalidRequest(f"{key} {value} must be in [{MIN_SIDE}, {MAX_SIDE}] px")
        size = (int(width), int(height))
    elif preset is not None:
        if preset not in PRESETS:
            raise InvalidRequest(
                f"unknown rendition preset {preset!r}: use one of {', '.join(PRESETS)} "
                "or set width and height"
            )
        size = PRESETS[preset]
    else:
        raise InvalidRequest(
            f"rendition needs a size: set preset ({', '.join(PRESETS)}) or width and height"
        )
    fit = params.get("fit", "crop")
    if fit not in FITS:
        raise InvalidRequest(f"fit {fit!r} must be one of {', '.join(FITS)}")
    background = _colour(params.get("background", "#ffffff"))
    watermark = params.get("watermark")
    if watermark is not None and (not isinstance(watermark, str) or not watermark):
        raise InvalidRequest(f"watermark must be the path of a logo image, not {watermark!r}")
    position = params.get("watermark_position", "bottom-right")
    if position not in POSITIONS:
        raise InvalidRequest(
            f"watermark_position {position!r} must be one of {', '.join(POSITIONS)}"
        )
    return {
        "size": size,
        "preset": preset if width is None else None,
        "fit": fit,
        "background": background,
        "watermark": watermark,
        "position": position,
        "opacity": _fraction(params, "watermark_opacity", 0.8, low=0.0, high=1.0),
        "scale": _fraction(params, "watermark_scale", 0.15, low=0.01, high=1.0),
        "margin": _fraction(params, "watermark_margin", 0.03, low=0.0, high=0.4),
    }


def render(image: Image, p: dict[str, Any], logo: Image | None = None) -> Image:
    """One rendition of ``image`` (any mode) as an RGB image of exactly ``p["size"]``."""
    from PIL import Image, ImageOps

    size = p["size"]
    source = _flatten(image, p["background"])
    if p["fit"] == "crop":
        out = ImageOps.fit(source, size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    else:
        inner = ImageOps.contain(source, size, method=Image.Resampling.LANCZOS)
        out = Image.new("RGB", size, p["background"])
        out.paste(inner, ((size[0] - inner.width) // 2, (size[1] - inner.height) // 2))
    if logo is not None:
        _stamp(out, logo, p)
    return out


def _stamp(out: Image, logo: Image, p: dict[str, Any]) -> None:
    from PIL import Image

    width = max(1, round(out.width * p["scale"]))
    height = max(1, round(logo.height * width / logo.width))
    mark = logo.resize((width, height), Image.Resampling.LANCZOS)
    if p["opacity"] < 1.0:
        alpha = mark.getchannel("A").point(lambda a: round(a * p["opacity"]))
        mark.putalpha(alpha)
    margin = round(out.width * p["margin"])
    right, bottom = out.width - width - margin, out.height - height - margin
    x = margin if p["position"].endswith("left") else right
    y = margin if p["position"].startswith("top") else bottom
    out.paste(mark, (x, y), mark)


def _flatten(image: Image, background: tuple[int, int, int]) -> Image:
    """RGB; transparent pixels become the background colour rather than black."""
    from PIL import Image

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGB", rgba.size, background)
        base.paste(rgba, (0, 0), rgba)
        return base
    return image.convert("RGB")


def _colour(value: Any) -> tuple[int, int, int]:
    from PIL import ImageColor

    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    ):
        return (int(value[0]), int(value[1]), int(value[2]))
    try:
        return ImageColor.getrgb(str(value))[:3]
    except ValueError:
        raise InvalidRequest(
            f"background {value!r} is not a colour: use #rrggbb, a name such as white, or [r, g, b]"
        ) from None


def _fraction(params: Any, key: str, default: float, *, low: float, high: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidRequest(f"{key} {value!r} must be a number in [{low:g}, {high:g}]")
    return float(value)


__all__ = ["PRESETS", "RenditionBackend", "plan", "render"]
