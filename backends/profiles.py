"""Built-in model profiles: the names rules use for models.

A profile is a task (a key of ``backends.BACKENDS``), a model (Hugging Face repo id, local
directory or ``random:NAME``) and the defaults that suit it. The role names of the
product (``explore``, ...) are profiles too, pointing at the model we recommend for
that stage. The daemon's config may override any field or add profiles.

``vram_gb`` is the planned peak device memory at the default size, batch 1, without CPU
offload: the weights (computed from the real architectures' parameter counts at the profile's
dtypes) plus an estimated activation headroom — see :mod:`backends.cards`, which also holds
each model's licence, gating, offload figures and timeout hints, and docs/models.md. The
``variant`` option (``fp16``) reads half-size weight files where the repo has them.
"""

from __future__ import annotations

from typing import Any


def _p(
    role: str,
    task: str,
    model: str,
    about: str,
    *,
    vram_gb: float,
    dtype: str = "bfloat16",
    max_side: int | None = 1024,
    defaults: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "role": role,
        "task": task,
        "model": model,
        "about": about,
        "vram_gb": vram_gb,
        "dtype": dtype,
        "max_side": max_side,
        "defaults": defaults or {},
        "options": options or {},
    }


def _hosted(
    role: str,
    task: str,
    model: str,
    about: str,
    *,
    provider: str,
    price_per_image: float | None,
    price_per_megapixel: float | None = None,
    max_side: int | None = 2048,
    defaults: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A hosted model (backends/hosted/): no GPU; ``model`` is the provider's model name.

    Prices are USD estimates for ``darkroom status`` and the sheets, not invoices: each entry
    below names its source and the date it was read. Options ``base_url`` (tests, proxies),
    ``api_key_env``, ``concurrency`` and ``timeout`` are documented in backends/hosted.
    """
    profile = _p(
        role,
        task,
        model,
        about,
        vram_gb=0,
        dtype="float32",
        max_side=max_side,
        defaults=defaults,
        options=options,
    )
    return {
        **profile,
        "provider": provider,
        "price_per_image": price_per_image,
        "price_per_megapixel": price_per_megapixel,
    }


_TURBO = {"steps": 2, "strength": 0.5, "guidance": 0.0}
_FP16 = {"variant": "fp16"}  # the repo's half-size weight files: half the download and load memory
# The x4 upscaler's documented defaults (StableDiffusionUpscalePipeline: 75 steps, guidance 9).
_X4 = {"steps": 75, "guidance": 9.0, "noise_level": 20}

PROFILES: dict[str, dict[str, Any]] = {
    # -- explore: fast img2img, many cheap options ---------------------------------------
    "sd-turbo": _p(
        "explore",
        "img2img",
        "stabilityai/sd-turbo",
        "SD 2.1 distilled to 1-4 steps at 512 px: the cheapest way to see options",
        vram_gb=3.4,
        dtype="float16",
        max_side=512,
        defaults=_TURBO,
        options=_FP16,
    ),
    "sdxl-turbo": _p(
        "explore",
        "img2img",
        "stabilityai/sdxl-turbo",
        "SDXL distilled to 1-4 steps at 512 px: better composition than sd-turbo",
        vram_gb=8.0,
        dtype="float16",
        max_side=512,
        defaults=_TURBO,
        options=_FP16,
    ),
    "flux-schnell": _p(
        "explore",
        "img2img",
        "black-forest-labs/FLUX.1-schnell",
        "FLUX.1 [schnell], 4 steps: strongest prompt following of the fast models",
        vram_gb=34.4,
        max_side=1024,
        defaults={"steps": 4, "strength": 0.6, "guidance": 0.0},
        # schnell's T5 prompt limit is 256 tokens (dev's is 512); FLUX needs sides in 16s
        options={"max_sequence_length": 256, "size_multiple": 16},
    ),
    # -- reference: consistent identity from several reference images -------------------
    "sdxl-ip-adapter": _p(
        "reference",
        "ip-adapter",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "SDXL + IP-Adapter: the references steer identity and style",
        vram_gb=12.6,
        dtype="float16",
        defaults={"steps": 25, "strength": 0.7, "guidance": 5.0, "ip_adapter_scale": 0.6},
        options={
            **_FP16,
            "ip_adapter": "h94/IP-Adapter",
            "ip_adapter_subfolder": "sdxl_models",
            "ip_adapter_weight_name": "ip-adapter_sdxl.bin",
        },
    ),
    "qwen-edit-plus": _p(
        "reference",
        "multi-edit",
        "Qwen/Qwen-Image-Edit-2509",
        "Qwen-Image-Edit-Plus: edits that combine up to 3 input images",
        vram_gb=57.7,
        defaults={"steps": 40, "guidance": 4.0},
        options={"max_images": 3},
    ),
    # -- hires: high resolution, several images per request ------------------------------
    "sdxl-hires": _p(
        "hires",
        "img2img",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "SDXL img2img up to 2048 px, VAE tiling on: detail passes at print size",
        vram_gb=10.5,
        dtype="float16",
        max_side=2048,
        defaults={"steps": 25, "strength": 0.35, "guidance": 5.0},
        options={**_FP16, "vae_tiling": True},
    ),
    "upscale-x4": _p(
        "hires",
        "upscale",
        "stabilityai/stable-diffusion-x4-upscaler",
        "the x4 diffusion upscaler: 512 px in, 2048 px out",
        vram_gb=7.6,
        dtype="float16",
        max_side=512,
        defaults=_X4,
        options={"vae_tiling": True},
    ),
    # -- edit: context-aware selective edits ---------------------------------------------
    "kontext": _p(
        "edit",
        "kontext",
        "black-forest-labs/FLUX.1-Kontext-dev",
        "FLUX.1 Kontext: 'make the sky stormy' instruction edits that keep the rest",
        vram_gb=35.4,
        defaults={"steps": 28, "guidance": 2.5},
    ),
    "kontext-inpaint": _p(
        "edit",
        "kontext-inpaint",
        "black-forest-labs/FLUX.1-Kontext-dev",
        "FLUX.1 Kontext limited to a mask",
        vram_gb=35.4,
        defaults={"steps": 28, "guidance": 2.5, "strength": 1.0},
    ),
    "sdxl-inpaint": _p(
        "edit",
        "inpaint",
        "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
        "SDXL inpainting: repaint the masked area from the prompt",
        vram_gb=8.5,
        dtype="float16",
        defaults={"steps": 25, "strength": 0.99, "guidance": 7.0},
        options=_FP16,
    ),
    "flux-fill": _p(
        "edit",
        "fill",
        "black-forest-labs/FLUX.1-Fill-dev",
        "FLUX.1 Fill: inpaint/outpaint the masked area",
        vram_gb=34.4,
        defaults={"steps": 50, "guidance": 30.0},
    ),  # the model card's defaults
    # -- animate: image to video -----------------------------------------------------------
    "svd": _p(
        "animate",
        "svd",
        "stabilityai/stable-video-diffusion-img2vid-xt",
        "Stable Video Diffusion XT: 25 frames of camera/subject motion, no prompt",
        vram_gb=12.2,
        dtype="float16",
        defaults={"frames": 25, "fps": 7, "steps": 25, "decode_chunk_size": 8},
        options=_FP16,
    ),
    "ltx-video": _p(
        "animate",
        "ltx-i2v",
        "Lightricks/LTX-Video",
        "LTX-Video image-to-video: prompt-driven motion, fast",
        vram_gb=17.2,
        defaults={"frames": 49, "fps": 24, "steps": 30, "guidance": 3.0},
    ),
    "wan-i2v": _p(
        "animate",
        "wan-i2v",
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        "Wan 2.1 image-to-video 14B at 480p: the highest quality motion",
        vram_gb=49.9,
        max_side=832,
        defaults={"frames": 33, "fps": 16, "steps": 30, "guidance": 5.0},
        # the model card loads the VAE and the image encoder in float32
        options={"fp32_components": ["vae", "image_encoder"]},
    ),
    # -- renditions: channel formats, no model ---------------------------------------------
    "square-1080": _p(
        "renditions",
        "rendition",
        "none",
        "1080x1080 crop for feeds",
        vram_gb=0,
        max_side=None,
        defaults={"preset": "square-1080", "fit": "crop"},
    ),
    "story-1080x1920": _p(
        "renditions",
        "rendition",
        "none",
        "1080x1920 for stories and reels",
        vram_gb=0,
        max_side=None,
        defaults={"preset": "story-1080x1920", "fit": "crop"},
    ),
    "banner-1200x628": _p(
        "renditions",
        "rendition",
        "none",
        "1200x628 link and ad banner",
        vram_gb=0,
        max_side=None,
        defaults={"preset": "banner-1200x628", "fit": "crop"},
    ),
    # -- the role names: the profile we recommend for each stage ---------------------------
    "explore": _p(
        "explore",
        "img2img",
        "stabilityai/sd-turbo",
        "= sd-turbo",
        vram_gb=3.4,
        dtype="float16",
        max_side=512,
        defaults=_TURBO,
        options=_FP16,
    ),
    "reference": _p(
        "reference",
        "ip-adapter",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "= sdxl-ip-adapter",
        vram_gb=12.6,
        dtype="float16",
        defaults={"steps": 25, "strength": 0.7, "guidance": 5.0, "ip_adapter_scale": 0.6},
        options={
            **_FP16,
            "ip_adapter": "h94/IP-Adapter",
            "ip_adapter_subfolder": "sdxl_models",
            "ip_adapter_weight_name": "ip-adapter_sdxl.bin",
        },
    ),
    "hires": _p(
        "hires",
        "upscale",
        "stabilityai/stable-diffusion-x4-upscaler",
        "= upscale-x4",
        vram_gb=7.6,
        dtype="float16",
        max_side=512,
        defaults=_X4,
        options={"vae_tiling": True},
    ),
    "edit": _p(
        "edit",
        "kontext",
        "black-forest-labs/FLUX.1-Kontext-dev",
        "= kontext",
        vram_gb=35.4,
        defaults={"steps": 28, "guidance": 2.5},
    ),
    "animate": _p(
        "animate",
        "svd",
        "stabilityai/stable-video-diffusion-img2vid-xt",
        "= svd",
        vram_gb=12.2,
        dtype="float16",
        defaults={"frames": 25, "fps": 7, "steps": 25, "decode_chunk_size": 8},
        options=_FP16,
    ),
    # -- offline models: random weights, the same loading path as real ones ----------------
    # Tests, the demo and benchmarks use these; every task has one.
    "tiny": _p(
        "explore",
        "img2img",
        "random:sd-tiny",
        "tiny random SD img2img: runs anywhere",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults=_TURBO,
    ),
    "tiny-sdxl": _p(
        "explore",
        "img2img",
        "random:sdxl-tiny",
        "tiny random SDXL img2img",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults=_TURBO,
    ),
    "tiny-flux": _p(
        "explore",
        "img2img",
        "random:flux-tiny",
        "tiny random FLUX img2img",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults={"steps": 2, "strength": 0.6, "guidance": 0.0},
        options={"size_multiple": 16},
    ),
    "tiny-ip-adapter": _p(
        "reference",
        "ip-adapter",
        "random:sdxl-ip-tiny",
        "tiny random SDXL + IP-Adapter",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults={"steps": 2, "strength": 0.6, "guidance": 0.0, "ip_adapter_scale": 0.6},
        options={
            "ip_adapter": "random:sdxl-ip-tiny",
            "ip_adapter_subfolder": "ip_adapter",
            "ip_adapter_weight_name": "ip-adapter_tiny.safetensors",
        },
    ),
    # No random: config builds it on the CPU (Qwen2-VL's processor needs torchvision): give it a
    # model (a tiny pipeline's directory) with `like: tiny-multi-edit`, as bench/gpu_check.py does.
    "tiny-multi-edit": _p(
        "reference",
        "multi-edit",
        "random:qwen-edit-tiny",
        "tiny Qwen-Image-Edit-Plus: needs torchvision and a model directory",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults={"steps": 2, "guidance": 1.0},
        options={"max_images": 3},
    ),
    "tiny-upscale": _p(
        "hires",
        "upscale",
        "random:upscale-tiny",
        "tiny random x4 upscaler",
        vram_gb=0.01,
        dtype="float32",
        max_side=32,
        defaults={"steps": 2, "guidance": 1.0, "noise_level": 20},
    ),
    "tiny-kontext": _p(
        "edit",
        "kontext",
        "random:kontext-tiny",
        "tiny random FLUX Kontext",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults={"steps": 2, "guidance": 2.5},
    ),
    "tiny-kontext-inpaint": _p(
        "edit",
        "kontext-inpaint",
        "random:kontext-tiny",
        "tiny random Kontext + mask",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults={"steps": 2, "guidance": 2.5, "strength": 1.0},
    ),
    "tiny-inpaint": _p(
        "edit",
        "inpaint",
        "random:sd-inpaint-tiny",
        "tiny random SD inpainting",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults={"steps": 2, "strength": 1.0, "guidance": 0.0},
    ),
    "tiny-fill": _p(
        "edit",
        "fill",
        "random:flux-fill-tiny",
        "tiny random FLUX Fill",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults={"steps": 2, "guidance": 30.0},
    ),
    "tiny-svd": _p(
        "animate",
        "svd",
        "random:svd-tiny",
        "tiny random Stable Video Diffusion",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults={"frames": 4, "fps": 7, "steps": 2},
    ),
    "tiny-ltx": _p(
        "animate",
        "ltx-i2v",
        "random:ltx-tiny",
        "tiny random LTX-Video",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults={"frames": 9, "fps": 24, "steps": 2, "guidance": 1.0},
    ),
    "tiny-wan": _p(
        "animate",
        "wan-i2v",
        "random:wan-tiny",
        "tiny random Wan I2V",
        vram_gb=0.01,
        dtype="float32",
        max_side=64,
        defaults={"frames": 5, "fps": 16, "steps": 2, "guidance": 1.0},
    ),
    "sd15-random": _p(
        "benchmark",
        "img2img",
        "random:sd15",
        "SD 1.5 shapes, random weights: real compute cost",
        vram_gb=3,
        dtype="float16",
        max_side=512,
        defaults=_TURBO,
    ),
    "sdxl-random": _p(
        "benchmark",
        "img2img",
        "random:sdxl",
        "SDXL shapes, random weights: real compute cost",
        vram_gb=8,
        dtype="float16",
        max_side=1024,
        defaults=_TURBO,
    ),
    "stub": _p(
        "test",
        "stub",
        "stub",
        "no model: tints the input by seed; the daemon's own tests",
        vram_gb=0,
        dtype="float32",
        max_side=64,
    ),
    # -- hosted: provider APIs (backends/hosted/, docs/hosted.md); keys from the environment --
    # ``model`` is the provider's model id: override it in the config when a provider renames
    # or retires one (profiles: {nano-banana: {model: ...}}). Limits (sizes, aspect ratios,
    # pixel ranges, input images) are per model, in ``options``; timeouts are the provider SDKs'.
    # Prices: USD per output image, ESTIMATES read on 2026-11-28 (docs/hosted.md has the sources);
    # check the consoles before budgeting. Ids: ai.google.dev/gemini-api/docs/deprecations (read
    # 2026-11-28): gemini-2.5-flash-image shut down 2026-10-02; the -preview image models shut
    # down 2026-06-25, replaced by gemini-3-pro-image and gemini-3.1-flash-image (GA 2026-05-28).
    # Gemini image prices: $120 / 1M output tokens (3 Pro Image: 1K/2K $0.134, 4K $0.24) and
    # $60 / 1M (3.1 Flash Image: 512 $0.045, 1K $0.067, 2K $0.101, 4K $0.151), as published for
    # the preview ids; input images extra (~$0.001 each).
    "nano-banana": _hosted(
        "edit",
        "gemini-image",
        "gemini-3.1-flash-image",
        "Nano Banana (now Gemini 3.1 Flash Image: 2.5 Flash Image shut down "
        "2026-10-02): instruction edits, 1K out by default, hosted",
        provider="google-gemini",
        price_per_image=0.067,
        max_side=1024,
        options={
            "api_key_env": "GEMINI_API_KEY",
            "concurrency": 4,
            "timeout": 600,
            "max_input_images": 14,
            "image_sizes": ["512", "1K", "2K", "4K"],
            "default_size": "1K",
            "aspect_ratios": [
                "1:1",
                "2:3",
                "3:2",
                "3:4",
                "4:3",
                "4:5",
                "5:4",
                "9:16",
                "16:9",
                "21:9",
                "1:4",
                "4:1",
                "1:8",
                "8:1",
            ],
            "price_by_size": {"512": 0.045, "1K": 0.067, "2K": 0.101, "4K": 0.151},
        },
    ),
    "nano-banana-pro": _hosted(
        "reference",
        "gemini-image",
        "gemini-3-pro-image",
        "Nano Banana Pro (Gemini 3 Pro Image): up to 14 images in, 1K/2K/4K out, hosted",
        provider="google-gemini",
        price_per_image=0.134,
        options={
            "api_key_env": "GEMINI_API_KEY",
            "concurrency": 4,
            "timeout": 600,
            "max_input_images": 14,
            "image_sizes": ["1K", "2K", "4K"],
            "default_size": "1K",
            "aspect_ratios": [
                "1:1",
                "2:3",
                "3:2",
                "3:4",
                "4:3",
                "4:5",
                "5:4",
                "9:16",
                "16:9",
                "21:9",
            ],
            "price_by_size": {"1K": 0.134, "2K": 0.134, "4K": 0.24},
        },
    ),
    "nano-banana-2": _hosted(
        "edit",
        "gemini-image",
        "gemini-3.1-flash-image",
        "Nano Banana 2 (Gemini 3.1 Flash Image): fast edits, up to 14 images "
        "in, 512 px to 4K out, hosted",
        provider="google-gemini",
        price_per_image=0.067,
        options={
            "api_key_env": "GEMINI_API_KEY",
            "concurrency": 4,
            "timeout": 600,
            "max_input_images": 14,
            "image_sizes": ["512", "1K", "2K", "4K"],
            "default_size": "1K",
            "aspect_ratios": [
                "1:1",
                "2:3",
                "3:2",
                "3:4",
                "4:3",
                "4:5",
                "5:4",
                "9:16",
                "16:9",
                "21:9",
                "1:4",
                "4:1",
                "1:8",
                "8:1",
            ],
            "price_by_size": {"512": 0.045, "1K": 0.067, "2K": 0.101, "4K": 0.151},
        },
    ),
    # BytePlus ModelArk (docs.byteplus.com ModelArk image generation API and price list, read
    # through copies on 2026-11-28): Seedream 4.0 $0.03, 4.5 $0.04 per generated image. Pixel
    # ranges: 4.0 1280x720 .. 4096x4096, 4.5 2560x1440 .. 4096x4096; aspect 1:16 .. 16:1.
    # seedream-4-0-250828 is retired in some regions: use seedream-4.5 or override the model.
    "seedream-4": _hosted(
        "explore",
        "seedream",
        "seedream-4-0-250828",
        "Seedream 4.0 (BytePlus ModelArk): image-to-image with references, "
        "one image per request at the input's aspect, 1K/2K/4K, hosted",
        provider="byteplus-modelark",
        price_per_image=0.03,
        options={
            "api_key_env": "ARK_API_KEY",
            "concurrency": 4,
            "timeout": 600,
            "connect_timeout": 60,
            "max_input_images": 14,
            "sizes": ["1K", "2K", "4K"],
            "default_size": "2K",
            "min_pixels": 1280 * 720,
            "max_pixels": 4096 * 4096,
            "max_aspect": 16,
        },
    ),
    "seedream-4.5": _hosted(
        "explore",
        "seedream",
        "seedream-4-5-251128",
        "Seedream 4.5 (BytePlus ModelArk): image-to-image with references, "
        "2K/4K at the input's aspect, hosted",
        provider="byteplus-modelark",
        price_per_image=0.04,
        options={
            "api_key_env": "ARK_API_KEY",
            "concurrency": 4,
            "timeout": 600,
            "connect_timeout": 60,
            "max_input_images": 14,
            "sizes": ["2K", "4K"],
            "default_size": "2K",
            "min_pixels": 2560 * 1440,
            "max_pixels": 4096 * 4096,
            "max_aspect": 16,
        },
    ),
    # BFL pricing (bfl.ai/pricing, 1 credit = $0.01, read 2026-11-28): Kontext [pro] 4 credits,
    # [max] 8 credits per image. Timeouts: 30 s per call (BFL's SDK); the task is polled.
    "flux-kontext-pro": _hosted(
        "edit",
        "bfl-kontext",
        "flux-kontext-pro",
        "FLUX.1 Kontext [pro] (Black Forest Labs API): instruction edits, hosted",
        provider="black-forest-labs",
        price_per_image=0.04,
        max_side=1024,
        options={
            "api_key_env": "BFL_API_KEY",
            "concurrency": 4,
            "timeout": 30,
            "poll_interval": 0.5,
            "poll_timeout": 300,
        },
    ),
    "flux-kontext-max": _hosted(
        "edit",
        "bfl-kontext",
        "flux-kontext-max",
        "FLUX.1 Kontext [max] (Black Forest Labs API): best typography and "
        "prompt adherence, hosted",
        provider="black-forest-labs",
        price_per_image=0.08,
        max_side=1024,
        options={
            "api_key_env": "BFL_API_KEY",
            "concurrency": 4,
            "timeout": 30,
            "poll_interval": 0.5,
            "poll_timeout": 300,
        },
    ),
}
