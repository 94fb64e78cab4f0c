"""Which devices get a worker: ``auto`` resolved without touching CUDA in the main process.

The main process must never initialise CUDA (a CUDA context does not survive ``fork``, and
one held by the main process wastes memory on every GPU), so ``auto`` counts GPUs the way
the driver exposes them: ``CUDA_VISIBLE_DEVICES`` when set, else the entries of
``/proc/driver/nvidia/gpus``. One GPU or none keeps the single-worker ``auto`` (the worker
then picks ``cuda:0`` or falls back to the CPU itself, with torch, where it is safe to ask).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def count_gpus(env: Mapping[str, str] | None = None, gpus_dir: Path = NVIDIA_GPUS) -> int:
    visible = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"])
    try:
        return sum(1 for _ in gpus_dir.iterdir())
    except OSError:
        return 0


def resolve(devices: list[str], gpus: int | None = None) -> list[str]:
    """``[auto]`` -> ``[cuda:0, ..., cuda:N-1]`` when N >= 2 GPUs are visible, else unchanged."""
    if devices == ["auto"]:
        n = count_gpus() if gpus is None else gpus
        return [f"cuda:{i}" for i in range(n)] if n >= 2 else ["auto"]
    return list(devices)
