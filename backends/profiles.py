"""Built-in model profiles: the names rules use for models.

A profile is a task (a key of ``backends.BACKENDS``), a model (Hugging Face repo id, local
directory or ``random:NAME``) and the defaults that suit it. The role names of the
product (``explore``, ...) are profiles too, pointing at the model we recommend for
that stage. The daemon's config may override any field or add profiles.

``vram_gb`` is the typical peak device memory at the default size, fp16, batch 1; it is
a guide for operators (``darkroom models``), not a limit.
"""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    # -- explore: fast img2img, many cheap options -------------------------------------
    "sd-turbo": {
        "role": "explore",
        "task": "img2img",
        "model": "stabilityai/sd-turbo",
        "dtype": "float16",
        "max_side": 512,
        "defaults": {"steps": 2, "strength": 0.5, "guidance": 0.0},
        "vram_gb": 3.0,
        "about": "SD 2.1 distilled to 1-4 steps; 512 px; the cheapest way to see options",
    },
    "sdxl-turbo": {
        "role": "explore",
        "task": "img2img",
        "model": "stabilityai/sdxl-turbo",
        "dtype": "float16",
        "max_side": 512,
        "defaults": {"steps": 2, "strength": 0.5, "guidance": 0.0},
        "vram_gb": 8.0,
        "about": "SDXL distilled to 1-4 steps; better composition than sd-turbo",
    },
    "explore": {
        "role": "explore",
        "task": "img2img",
        "model": "stabilityai/sd-turbo",
        "dtype": "float16",
        "max_side": 512,
        "defaults": {"steps": 2, "strength": 0.5, "guidance": 0.0},
        "vram_gb": 3.0,
        "about": "the default exploration model (sd-turbo)",
    },
    # -- offline models: random weights, same loading path as real ones -----------------
    "tiny": {
        "role": "explore",
        "task": "img2img",
        "model": "random:sd-tiny",
        "dtype": "float32",
        "max_side": 64,
        "defaults": {"steps": 2, "strength": 0.5, "guidance": 0.0},
        "vram_gb": 0.01,
        "about": "a tiny random-weight SD pipeline: runs anywhere, for demos and tests",
    },
    "sd15-random": {
        "role": "explore",
        "task": "img2img",
        "model": "random:sd15",
        "dtype": "float16",
        "max_side": 512,
        "defaults": {"steps": 2, "strength": 0.5, "guidance": 0.0},
        "vram_gb": 3.0,
        "about": "SD 1.5 architecture with random weights: real compute cost, for benchmarks",
    },
    "stub": {
        "role": "test",
        "task": "stub",
        "model": "stub",
        "dtype": "float32",
        "max_side": 64,
        "defaults": {},
        "vram_gb": 0.0,
        "about": "no model: tints the input by seed; for the daemon's own tests",
    },
}
