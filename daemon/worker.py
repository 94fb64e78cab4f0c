"""The worker process: holds loaded pipelines on one device and runs requests.

Started with the ``spawn`` method (CUDA does not survive ``fork``). It talks to the main
process over a pipe with plain tuples:

    main -> worker:  ("load", spec) | ("run", spec, request) | ("stop",)
    worker -> main:  ("ready", info) | ("ok", result) | ("error", kind, message, sticky, oom)

``kind`` is the name of a ``backends.base`` error class, so the main process can tell
an invalid request (never retried) from a device failure (worker replaced).
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from pathlib import Path
from typing import Any


def resolve_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"  # no torch import: a CPU worker for the stub backend starts instantly
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        return "cuda:0"
    return requested


def _concrete(spec: Any, device: str) -> Any:
    # Half precision is a GPU feature; on the CPU it is slow or unsupported.
    dtype = spec.dtype if device.startswith("cuda") else "float32"
    if dtype == "auto":
        dtype = "float16"
    return dataclasses.replace(spec, device=device, dtype=dtype)


def _touch_device(device: str) -> str:
    """A tiny operation on the device: proves the worker (and its CUDA context) still works."""
    if not device.startswith("cuda"):
        return device
    import torch

    value = torch.ones(1, device=device).add_(1).item()
    if value != 2.0:
        raise RuntimeError(f"{device} computed 1 + 1 = {value}")
    return device


def main(conn: Any, device: str, threads: int, cache_dir: str) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # keep the journal for our own lines
    from backends import BackendError, DeviceError, backend_class

    torch_threads = None
    if threads:
        import torch

        torch.set_num_threads(threads)
        torch_threads = torch.get_num_threads()
    device = resolve_device(device)
    loaded: dict[Any, Any] = {}

    def get(spec: Any) -> Any:
        spec = _concrete(spec, device)
        backend = loaded.get(spec)
        if backend is None:
            backend = backend_class(spec.task)(spec, Path(cache_dir))
            backend.load()
            loaded[spec] = backend
        return backend

    conn.send(("ready", {"device": device, "pid": os.getpid(), "torch_threads": torch_threads}))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "stop":
            return
        if message[0] == "ping":
            try:
                conn.send(("ok", _touch_device(device)))
            except Exception as exc:  # a poisoned device context fails here, not only in jobs
                conn.send(("error", "DeviceError", f"device check failed: {exc}", True, False))
            continue
        try:
            backend = get(message[1])
            if message[0] == "load":
                conn.send(("ok", None))
                continue
            request = message[2]
            backend.validate(request)
            conn.send(("ok", backend.run(request)))
        except DeviceError as exc:
            conn.send(("error", type(exc).__name__, str(exc), exc.sticky, exc.out_of_memory))
        except BackendError as exc:
            conn.send(("error", type(exc).__name__, str(exc), False, False))
        except Exception as exc:  # a bug in a backend must not kill the worker silently
            detail = "".join(traceback.format_exception_only(exc)).strip()
            conn.send(("error", "BackendError", f"unexpected error: {detail}", False, False))
