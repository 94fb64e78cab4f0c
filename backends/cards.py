"""What an operator must know about each built-in local model before using it: licence, gating,
memory, speed. A literal table keyed by profile name (no torch here).

**Memory** figures are *computed*, not measured: the parameters of each component
(:mod:`backends.param_counts`, the real architectures built on the meta device) times the bytes
of the dtype the profile loads it in, plus a headroom for activations at the profile's default
size that is an *estimate* (stated per card; the GPU check measures the real peak). So:

- ``weights_gib``   every component on the device (``cpu_offload`` off);
- ``peak_gib``      weights + headroom: what to plan the model cache with;
- ``offload_gib``   ``cpu_offload: model``: the largest component + headroom;
- sequential offload needs about the headroom alone (slow: minutes per image for 12B models).

**Licences** and **gating** are as the model cards on huggingface.co state them (read 2025);
check the card before building a product on a model. Gated repos need their licence accepted
with a Hugging Face account and ``HF_TOKEN`` set (docs/models.md).

**Timeouts**: :func:`timeout_hint` gives a job time limit that scales with the outputs (and
frames) a job makes, from a generous per-output budget (an upper bound, not a benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

# Parameters per component, computed by backends.param_counts (test_param_counts re-checks).
PARAMS: dict[str, int] = {
    "clip-l-text": 123_060_480,
    "openclip-h-text": 340_387_840,
    "openclip-bigg-text": 694_659_840,
    "vit-h-vision": 632_076_800,
    "vit-bigg-vision": 1_844_907_264,
    "t5-xxl-encoder": 4_762_310_656,
    "umt5-xxl-encoder": 5_680_910_336,
    "sd-vae": 83_653_863,
    "flux-vae": 83_819_683,
    "x4-vae": 55_325_927,
    "flux-transformer-schnell": 11_891_178_560,
    "flux-transformer-dev": 11_901_408_320,
    "flux-transformer-fill": 11_902_391_360,
    "sd21-unet": 865_910_724,
    "sdxl-unet": 2_567_463_684,
    "sdxl-inpaint-unet": 2_567_478_084,
    "x4-unet": 473_398_020,
    "svd-unet": 1_524_623_082,
    "svd-vae": 97_742_847,
    "ltx-transformer": 1_923_385_472,
    "ltx-vae": 419_193_649,
    "wan-i2v-14b-transformer": 16_394_878_784,
    "wan-vae": 126_892_531,
    "qwen-image-transformer": 20_430_401_088,
    "qwen-image-vae": 126_892_531,
    "qwen2.5-vl-7b": 8_292_166_656,
    "ip-adapter-sdxl": 351_285_248,
}

_STABILITY_COMMUNITY = (
    "stabilityai-ai-community",
    "https://stability.ai/community-license-agreement",
    "free below USD 1M annual revenue; an enterprise licence above",
)
_OPENRAIL_PP = (
    "openrail++",
    "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blob/main/LICENSE.md",
    "yes, within the licence's use restrictions",
)
_APACHE = ("apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0", "yes")
_FLUX_DEV = (
    "flux-1-dev-non-commercial-license",
    "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
    "no: outputs may be used commercially, the model may not (a BFL licence is needed)",
)
_FLUX_TEXT = (("clip-l-text", "bfloat16"), ("t5-xxl-encoder", "bfloat16"), ("flux-vae", "bfloat16"))
_SDXL = (
    ("sdxl-unet", "float16"),
    ("clip-l-text", "float16"),
    ("openclip-bigg-text", "float16"),
    ("sd-vae", "float16"),
)


@dataclass(frozen=True)
class ModelCard:
    model: str  # Hugging Face repo id
    licence: str  # short id, as the hub's licence tag
    licence_url: str
    commercial: str  # commercial use, in one line
    gated: bool  # licence must be accepted on the hub (HF_TOKEN needed)
    components: tuple[tuple[str, str], ...]  # (PARAMS key, dtype it is loaded in)
    headroom_gib: float  # activations at the default size: an estimate
    seconds_per_output: float  # a generous budget on a data-centre GPU, not a benchmark
    load_seconds: float  # from a local disk cache
    speed: str  # for docs/models.md

    @property
    def params(self) -> int:
        return sum(PARAMS[name] for name, _ in self.components)

    @property
    def weights_gib(self) -> float:
        return sum(PARAMS[name] * BYTES[dtype] for name, dtype in self.components) / GIB

    @property
    def peak_gib(self) -> float:
        return self.weights_gib + self.headroom_gib

    @property
    def offload_gib(self) -> float:
        largest = max(PARAMS[name] * BYTES[dtype] for name, dtype in self.components)
        return largest / GIB + self.headroom_gib


def _card(
    model: str,
    licence: tuple[str, str, str],
    *,
    gated: bool,
    components: tuple[tuple[str, str], ...],
    headroom: float,
    per_output: float,
    load: float,
    speed: str,
) -> ModelCard:
    return ModelCard(
        model,
        licence[0],
        licence[1],
        licence[2],
        gated,
        components,
        headroom,
        per_output,
        load,
        speed,
    )


_SD_TURBO = _card(
    "stabilityai/sd-turbo",
    _STABILITY_COMMUNITY,
    gated=False,
    components=(("sd21-unet", "float16"), ("openclip-h-text", "float16"), ("sd-vae", "float16")),
    headroom=1.0,
    per_output=5,
    load=20,
    speed="1-4 steps at 512 px: the fastest profile",
)
_SDXL_TURBO = _card(
    "stabilityai/sdxl-turbo",
    _STABILITY_COMMUNITY,
    gated=False,
    components=_SDXL,
    headroom=1.5,
    per_output=8,
    load=30,
    speed="1-4 steps at 512 px",
)
_FLUX_SCHNELL = _card(
    "black-forest-labs/FLUX.1-schnell",
    _APACHE,
    gated=False,
    components=(("flux-transformer-schnell", "bfloat16"), *_FLUX_TEXT),
    headroom=3.0,
    per_output=30,
    load=90,
    speed="4 steps at 1024 px; 12B transformer",
)
_SDXL_IP = _card(
    "stabilityai/stable-diffusion-xl-base-1.0",
    _OPENRAIL_PP,
    gated=False,
    components=(*_SDXL, ("vit-bigg-vision", "float16"), ("ip-adapter-sdxl", "float16")),
    headroom=2.0,
    per_output=30,
    load=45,
    speed="25 steps at 1024 px; adapter h94/IP-Adapter (apache-2.0)",
)
_QWEN_EDIT = _card(
    "Qwen/Qwen-Image-Edit-2509",
    _APACHE,
    gated=False,
    components=(
        ("qwen-image-transformer", "bfloat16"),
        ("qwen2.5-vl-7b", "bfloat16"),
        ("qwen-image-vae", "bfloat16"),
    ),
    headroom=4.0,
    per_output=120,
    load=180,
    speed="40 steps at ~1 MP; 20B transformer + 7B vision-language encoder: the slowest image model",
)
_SDXL_HIRES = _card(
    "stabilityai/stable-diffusion-xl-base-1.0",
    _OPENRAIL_PP,
    gated=False,
    components=_SDXL,
    headroom=4.0,
    per_output=90,
    load=30,
    speed="25 steps x strength at up to 2048 px, VAE tiled",
)
_UPSCALE = _card(
    "stabilityai/stable-diffusion-x4-upscaler",
    _OPENRAIL_PP,
    gated=False,
    components=(("x4-unet", "float16"), ("openclip-h-text", "float16"), ("x4-vae", "float16")),
    headroom=6.0,
    per_output=120,
    load=20,
    speed="75 steps in pixel-space latents at 512 -> 2048 px: slow for its size",
)
_KONTEXT = _card(
    "black-forest-labs/FLUX.1-Kontext-dev",
    _FLUX_DEV,
    gated=True,
    components=(("flux-transformer-dev", "bfloat16"), *_FLUX_TEXT),
    headroom=4.0,
    per_output=90,
    load=90,
    speed="28 steps at ~1 MP; the input doubles the sequence",
)
_SDXL_INPAINT = _card(
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
    _OPENRAIL_PP,
    gated=False,
    components=(("sdxl-inpaint-unet", "float16"), *_SDXL[1:]),
    headroom=2.0,
    per_output=30,
    load=30,
    speed="25 steps at 1024 px",
)
_FLUX_FILL = _card(
    "black-forest-labs/FLUX.1-Fill-dev",
    _FLUX_DEV,
    gated=True,
    components=(("flux-transformer-fill", "bfloat16"), *_FLUX_TEXT),
    headroom=3.0,
    per_output=120,
    load=90,
    speed="50 steps at ~1 MP (the card's default)",
)
_SVD = _card(
    "stabilityai/stable-video-diffusion-img2vid-xt",
    _STABILITY_COMMUNITY,
    gated=True,
    components=(("svd-unet", "float16"), ("vit-h-vision", "float16"), ("svd-vae", "float16")),
    headroom=8.0,
    per_output=180,
    load=30,
    speed="25 frames at 1024x576, 25 steps; decode_chunk_size trades memory for speed",
)
_LTX = _card(
    "Lightricks/LTX-Video",
    (
        "ltx-video-open-weights",
        "https://huggingface.co/Lightricks/LTX-Video/blob/main/LICENSE",
        (
            "depends on the checkpoint's licence: the 2B 0.9.x weights are OpenRAIL-M; newer "
            "ones in the repo use the LTXV Open Weights License (free below USD 10M revenue)"
        ),
    ),
    gated=False,
    components=(
        ("ltx-transformer", "bfloat16"),
        ("t5-xxl-encoder", "bfloat16"),
        ("ltx-vae", "bfloat16"),
    ),
    headroom=4.0,
    per_output=120,
    load=60,
    speed="49 frames at ~704x480, 30 steps: fast for video",
)
_WAN = _card(
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    _APACHE,
    gated=False,
    components=(
        ("wan-i2v-14b-transformer", "bfloat16"),
        ("umt5-xxl-encoder", "bfloat16"),
        ("vit-h-vision", "float32"),
        ("wan-vae", "float32"),
    ),
    headroom=6.0,
    per_output=900,
    load=180,
    speed="33 frames at 832x480, 30 steps; 14B: minutes per clip even on an H100",
)

# Profile name -> card. Role names share their target's card.
CARDS: dict[str, ModelCard] = {
    "sd-turbo": _SD_TURBO,
    "explore": _SD_TURBO,
    "sdxl-turbo": _SDXL_TURBO,
    "flux-schnell": _FLUX_SCHNELL,
    # text-to-image twins (briefs without a photo): the same weights, the same card
    "sd-turbo-t2i": _SD_TURBO,
    "sdxl-turbo-t2i": _SDXL_TURBO,
    "flux-schnell-t2i": _FLUX_SCHNELL,
    "sdxl-ip-adapter": _SDXL_IP,
    "reference": _SDXL_IP,
    "qwen-edit-plus": _QWEN_EDIT,
    "sdxl-hires": _SDXL_HIRES,
    "upscale-x4": _UPSCALE,
    "hires": _UPSCALE,
    "kontext": _KONTEXT,
    "kontext-inpaint": _KONTEXT,
    "edit": _KONTEXT,
    "sdxl-inpaint": _SDXL_INPAINT,
    "flux-fill": _FLUX_FILL,
    "svd": _SVD,
    "animate": _SVD,
    "ltx-video": _LTX,
    "wan-i2v": _WAN,
}


def card(profile: str) -> ModelCard | None:
    """The card of a built-in local profile; None for tiny, benchmark, hosted and custom ones."""
    return CARDS.get(profile)


def memory_gib(profile: str, cpu_offload: str | bool | None = None) -> float | None:
    """Device memory to plan for ``profile`` under a ``cpu_offload`` mode, or None if unknown."""
    found = CARDS.get(profile)
    if found is None:
        return None
    if cpu_offload in (True, "model"):
        return found.offload_gib
    if cpu_offload == "sequential":
        return found.headroom_gib
    return found.peak_gib


def timeout_hint(profile: str, outputs: int = 1, *, default: float = 600.0) -> float:
    """A job time limit in seconds for ``outputs`` outputs (clips count as outputs).

    ``load_seconds`` once plus ``seconds_per_output`` per output; profiles without a card get
    ``default`` per 4 outputs (the daemon's flat ``job_timeout`` used to be 600 s per job).
    Downloads are not included: fetch weights before the first job (``hf download``).
    """
    found = CARDS.get(profile)
    n = max(1, outputs)
    if found is None:
        return default * max(1.0, n / 4)
    return found.load_seconds + found.seconds_per_output * n
