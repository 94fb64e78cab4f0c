"""Live: the GPU, its driver, and whether the installed torch can use it.

``nvidia-smi -L`` says whether the box has NVIDIA GPUs (no CUDA is touched for that); the torch
build is read from its files, and torch is imported (seconds) only on a box with GPUs, to see
whether it can reach them. A CPU build of torch on a GPU box is a warning
(everything runs, slowly); a device configured as ``cuda`` that torch cannot reach fails.
"""

from __future__ import annotations

import shutil
import subprocess

from daemon.config.settings import Settings
from daemon.diagnose.findings import Finding, Status, fail, ok, warn

CHECK = "gpu"
CUDA_INDEX_FIX = (
    "install the CUDA build of torch: make venv (it picks it when nvidia-smi works), or "
    "pip install torch --index-url https://download.pytorch.org/whl/cu128"
)


def nvidia_gpus(timeout: float = 20.0) -> list[str] | None:
    """The GPUs ``nvidia-smi -L`` lists; None when the tool is absent or fails."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        done = subprocess.run(
            [tool, "-L"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def torch_build() -> tuple[str, bool] | None:
    """(version, whether it is a CUDA build) of the installed torch, without importing it
    (that takes seconds): a CUDA build ships ``lib/libtorch_cuda.so``. None: not installed."""
    import importlib.metadata
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return version, any(lib.glob("libtorch_cuda*"))


def check_gpu(settings: Settings) -> Finding:
    wanted = settings.worker.device_list
    wants_cuda = any(d.startswith("cuda") for d in wanted)
    wants_cpu_only = all(d == "cpu" for d in wanted)
    gpus = nvidia_gpus()
    build = torch_build()
    if build is None:
        return fail(CHECK, "torch is not installed", "run make venv")
    version, cuda_build = build
    if gpus is None:
        if wants_cuda:
            return fail(
                CHECK,
                f"worker.devices is {wanted} but no NVIDIA GPU answers (nvidia-smi missing or"
                " failing)",
                "install the NVIDIA driver, or set worker.device: cpu",
            )
        note = "" if wants_cpu_only else " (worker.device auto: models run on the CPU, slowly)"
        return ok(CHECK, f"no NVIDIA GPU; torch {version}{note}")
    names = "; ".join(gpus)
    if not cuda_build:
        if wants_cpu_only:
            return ok(CHECK, f"{names}; torch {version} (CPU build; worker.device: cpu)")
        return warn(
            CHECK,
            f"{names} present but torch {version} is a CPU build: models run on the CPU",
            CUDA_INDEX_FIX,
        )
    try:
        import torch

        cuda_version = torch.version.cuda
    except ImportError as exc:
        return fail(CHECK, f"torch cannot be imported ({exc})", "run make venv")
    try:
        usable = torch.cuda.is_available()
        count = torch.cuda.device_count() if usable else 0
    except Exception as exc:  # noqa: BLE001 - a broken driver raises anything
        usable, count = False, 0
        names += f" ({type(exc).__name__}: {exc})"
    if not usable:
        return Finding(
            CHECK,
            Status.FAIL if wants_cuda else Status.WARN,
            f"{names}; torch {version} (CUDA {cuda_version}) cannot use them",
            "the driver may be older than the CUDA of torch: update the driver (nvidia-smi "
            "shows its CUDA version) or install a torch built for an older CUDA",
        )
    missing = [d for d in wanted if d.startswith("cuda:") and int(d.split(":")[1]) >= count]
    if missing:
        return fail(
            CHECK,
            f"worker.devices names {', '.join(missing)} but torch sees {count} GPU(s)",
            f"use cuda:0 .. cuda:{count - 1}, or auto",
        )
    return ok(CHECK, f"{count} GPU(s): {names}; torch {version} (CUDA {cuda_version})")
