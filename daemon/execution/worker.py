"""The worker process: holds loaded pipelines on one device and runs requests.

Started with the ``spawn`` method (CUDA does not survive ``fork``). It talks to the main
process over a pipe with plain tuples:

    main -> worker:  ("load", spec[, planned_gb]) | ("run", spec, request[, planned_gb])
                   | ("ping",) | ("stop",)
    worker -> main:  ("ready", info)
                   | ("ok", result, state)
                   | ("error", kind, message, sticky, oom, state)

``kind`` is the name of a ``backends.base`` error class, so the main process can tell
an invalid request (never retried) from a device failure (worker replaced). ``state``
tells the pool what this worker now holds — the loaded specs (the cache may have unloaded
some to stay within its memory budget), its resident memory, model loads so far — so the
pool can send work where its model already is and recycle a worker that grows. Its
``events`` are the loads and evictions since the previous reply, each
``("loaded" | "evicted", spec, seconds)``: the pool reports them to the hooks (metrics).

Pipelines live in a :class:`daemon.execution.model_cache.ModelCache` (least recently used out,
within ``memory_budget_gb``; on CUDA, 90 % of the device when none is configured; what a new
model's ``planned_gb`` needs is unloaded before it loads). After an out-of-memory error the
worker unloads every other pipeline and frees cached device memory before answering, so the
pool's retry (internal batch 1, then model offload, then sequential offload: the same loaded
weights re-placed, never loaded twice) starts from a clean device.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
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


def concrete_spec(spec: Any, device: str) -> Any:
    """``spec`` as it is loaded on ``device``."""
    # Half precision is a GPU feature; on the CPU it is slow or unsupported.
    dtype = spec.dtype if device.startswith("cuda") else "float32"
    if dtype == "auto":
        dtype = "float16"
    return dataclasses.replace(spec, device=device, dtype=dtype)


def error_kind(exc: BaseException) -> str:
    """The name the main process decides on (``backends.base.DISPOSITIONS``): the error's own
    class, or the nearest base class the table knows (a backend's private subclass)."""
    from backends.base import DISPOSITIONS

    for cls in type(exc).__mro__:
        if cls.__name__ in DISPOSITIONS:
            return cls.__name__
    return "BackendError"


def error_message(exc: BaseException) -> str:
    """What the job's record says: the backend's message, with the provider's request id when
    the message does not carry it yet (the operator's reference for a possibly paid call)."""
    text = str(exc)
    request_id = getattr(exc, "request_id", None)
    if request_id and str(request_id) not in text:
        text = f"{text} [request {request_id}]"
    return text


def _touch_device(device: str) -> str:
    """A tiny operation on the device: proves the worker (and its CUDA context) still works."""
    if not device.startswith("cuda"):
        return device
    import torch

    value = torch.ones(1, device=device).add_(1).item()
    if value != 2.0:
        raise RuntimeError(f"{device} computed 1 + 1 = {value}")
    return device


def die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive its daemon (kill -9 included): it would hold the GPU beside
    the restarted daemon's new worker. Linux delivers SIGKILL on the parent's death; the
    check afterwards closes the race where the parent died before the request was made."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: fall back on the watcher thread alone
        pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="darkroom-parent-watch", daemon=True).start()


def main(
    conn: Any,
    device: str,
    threads: int,
    cache_dir: str,
    memory_budget_gb: float | None = None,
    parent_pid: int | None = None,
) -> None:
    if parent_pid is not None:
        die_with_parent(parent_pid)
    from daemon.service import logs  # spawned: the daemon's logging setup is not inherited

    logs.configure_worker()  # before backends import diffusers (see logs._adopt)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # keep the journal for our own lines
    from backends import BackendError, DeviceError, backend_class
    from daemon.execution.model_cache import ModelCache, free_memory, rss_bytes

    torch_threads = None
    if threads:
        import torch

        torch.set_num_threads(threads)
        torch_threads = torch.get_num_threads()
    device = resolve_device(device)

    def build(spec: Any) -> Any:
        concrete = concrete_spec(spec, device)
        backend = backend_class(concrete.task)(concrete, Path(cache_dir))
        backend.load()
        return backend

    if memory_budget_gb is None:
        # Unlimited would let a second big model load beside the first and fail with OOM.
        from backends.runtime.memory import default_cache_budget_gb

        memory_budget_gb = default_cache_budget_gb(device)
    cache = ModelCache(
        device, memory_budget_gb, build, concrete=lambda spec: concrete_spec(spec, device)
    )

    def state() -> dict[str, Any]:
        return {
            "loaded": cache.specs(),
            "rss": rss_bytes(),
            "loads": cache.loads,
            "model_bytes": cache.used(),
            "events": cache.take_events(),
        }

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
                conn.send(("ok", _touch_device(device), state()))
            except Exception as exc:  # a poisoned device context fails here, not only in jobs
                conn.send(
                    ("error", "DeviceError", f"device check failed: {exc}", True, False, state())
                )
            continue
        spec = message[1]
        # The model's planned device memory (GiB) rides last on load and run messages.
        planned = message[2] if message[0] == "load" and len(message) > 2 else None
        if message[0] == "run" and len(message) > 3:
            planned = message[3]
        try:
            backend = cache.get(spec, planned)
            if message[0] == "load":
                conn.send(("ok", None, state()))
                continue
            request = message[2]
            backend.validate(request)
            conn.send(("ok", backend.run(request), state()))
        except DeviceError as exc:
            if exc.out_of_memory:
                cache.drop_all_but(spec)
                free_memory(device)
            conn.send(
                ("error", type(exc).__name__, str(exc), exc.sticky, exc.out_of_memory, state())
            )
        except BackendError as exc:
            conn.send(("error", error_kind(exc), error_message(exc), False, False, state()))
        except Exception as exc:  # a bug in a backend must not kill the worker silently
            detail = "".join(traceback.format_exception_only(exc)).strip()
            conn.send(
                ("error", "BackendError", f"unexpected error: {detail}", False, False, state())
            )
