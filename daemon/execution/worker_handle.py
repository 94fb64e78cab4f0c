"""The main process's handle on one worker process: start it, send it a message, stop it.

The pool (:mod:`daemon.execution.pool`) owns the handles and lends each to one caller at a
time. The messages and replies are the plain tuples :mod:`daemon.execution.worker`
documents; this module turns a reply into a value or the daemon's own error
(:class:`~daemon.errors.WorkerDied`, :class:`~daemon.errors.OutOfMemory`,
:class:`~daemon.errors.JobError`) and keeps the worker's own account of what it holds.

A worker runs model code (and unpickles what model files contain), so it is started with an
allow-listed environment (:func:`worker_environment`): locale, paths, the GPU, Hugging Face,
torch and thread settings, proxies and CA bundles, and provider API keys (``*_API_KEY`` plus
the names a profile asks for) -- never the daemon's AWS credentials or webhook secret.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from backends.base import ModelSpec, disposition
from daemon.errors import DarkroomError, EnvironmentFault, JobError, OutOfMemory, WorkerDied

log = structlog.get_logger("darkroom.pool")

# Beyond backends.base.disposition()'s "hold" (an account's configuration): a missing package
# (BackendMissing: an extra, a CPU-only torch) or missing weights (ModelUnavailable: not in the
# Hugging Face cache, a gated repo without HF_TOKEN) are the machine's fault, not the input's:
# the job is held until an operator installs or downloads what the message names.
HELD_KINDS = frozenset({"BackendMissing", "ModelUnavailable"})

# The environment a worker is started with: what model code, CUDA and the hosted clients read.
WORKER_ENV_NAMES = frozenset(
    {
        *("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TERM", "NO_COLOR"),
        *("TMPDIR", "TEMP", "TMP", "VIRTUAL_ENV", "LD_LIBRARY_PATH"),
        # systemd: LoadCredential= files (hosted keys), the journal stream (log priorities)
        *("CREDENTIALS_DIRECTORY", "JOURNAL_STREAM"),
        # the daemon's own: the worker's log setup, the reliability suite's crash points
        *("DARKROOM_LOG_SETUP", "DARKROOM_FAULT"),
        # downloads (Hugging Face, hosted APIs) behind a proxy or a private CA
        *("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"),
        *("http_proxy", "https_proxy", "no_proxy", "all_proxy"),
        *("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"),
        "BFL_WEBHOOK_SECRET",  # sent to BFL with a webhook-mode task (backends.hosted.bfl)
    }
)
WORKER_ENV_PREFIXES = (
    *("LC_", "XDG_", "PYTHON", "COV_CORE_"),
    *("CUDA_", "NVIDIA_", "NCCL_", "ROCM_", "HIP_", "HSA_"),
    *("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DIFFUSERS_", "TOKENIZERS_"),
    *("TORCH_", "TORCHINDUCTOR_", "PYTORCH_", "TRITON_", "OMP_", "KMP_", "MKL_", "OPENBLAS_"),
    "DARKROOM_GPU_CHECK_",  # bench/gpu_check.py's instrumentation of the worker (no secrets)
)
WORKER_ENV_SUFFIXES = ("_API_KEY",)  # a hosted model's key (GEMINI_API_KEY, BFL_API_KEY, ...)


def worker_environment(environ: Mapping[str, str], allow: Collection[str] = ()) -> dict[str, str]:
    """The variables of ``environ`` a worker process is started with; ``allow`` adds names
    (a profile's ``api_key_env`` or ``webhook_secret_env`` that the patterns miss)."""
    return {
        name: value
        for name, value in environ.items()
        if name in WORKER_ENV_NAMES
        or name in allow
        or name.startswith(WORKER_ENV_PREFIXES)
        or name.endswith(WORKER_ENV_SUFFIXES)
    }


_spawning = threading.local()  # the names the current thread's next spawn leaves out
_wrap_lock = threading.Lock()


@contextmanager
def _spawned_without(names: Sequence[str]) -> Iterator[None]:
    """Spawned processes this thread starts inside the block do not inherit ``names``.

    multiprocessing's spawn has no ``env=``: the child gets the whole environment. Its one
    exec seam (``multiprocessing.util.spawnv_passfds``) is wrapped, once, to exec through
    ``env -u NAME ...``, which drops the names and execs the interpreter in the same process
    (same pid, same inherited pipes). The names are per thread, so other threads' spawns and
    the daemon's own ``os.environ`` are untouched; no value ever appears on a command line.
    """
    from multiprocessing import util

    with _wrap_lock:
        if not getattr(util.spawnv_passfds, "darkroom_env_filter", False):
            original: Any = util.spawnv_passfds

            def spawnv_passfds(path: Any, args: Sequence[Any], passfds: Sequence[int]) -> int:
                drop = getattr(_spawning, "names", None)
                tool = shutil.which("env", path="/usr/bin:/bin")
                if not drop or tool is None:
                    return int(original(path, args, passfds))
                unset = [part for name in drop for part in ("-u", name)]
                command = [tool, *unset, os.fsdecode(path), *args[1:]]
                return int(original(os.fsencode(tool), command, passfds))

            spawnv_passfds.darkroom_env_filter = True  # type: ignore[attr-defined]
            setattr(util, "spawnv_passfds", spawnv_passfds)  # noqa: B010 - typeshed says bytes
    if names and shutil.which("env", path="/usr/bin:/bin") is None:
        log.warning("no env(1) in /usr/bin or /bin: the worker inherits the whole environment")
    _spawning.names = list(names)
    try:
        yield
    finally:
        _spawning.names = None


def _start_from_own_thread(process: multiprocessing.process.BaseProcess, drop: list[str]) -> None:
    """Start ``process`` from a thread that lives exactly as long as it does.

    The worker asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG, see
    :func:`daemon.execution.worker.die_with_parent`), and Linux counts the *thread* that
    forked it as the parent. Started from a runner thread, the worker was killed the moment
    that thread ended at the daemon's stop, before it was asked to stop: its exit handlers
    never ran, and multiprocessing's resource tracker reported the semaphore it held (tqdm's
    lock) as "leaked" at every stop. This thread ends only once the process has; it is a
    daemon thread, so it never holds up the daemon's exit."""
    started = threading.Event()
    failure: list[BaseException] = []

    def parent() -> None:
        try:
            with _spawned_without(drop):
                process.start()
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
            return
        finally:
            started.set()
        # The sentinel, not join(): this thread must not reap the child under the pool's
        # own join()/is_alive() calls.
        multiprocessing.connection.wait([process.sentinel])

    threading.Thread(target=parent, name="darkroom-worker-parent", daemon=True).start()
    started.wait()
    if failure:
        raise failure[0]


def backend_failure(kind: str, message: str) -> DarkroomError:
    """The daemon's error for a backend error of class ``kind`` (a ``backends.base`` name).

    ``disposition(kind)``: "hold" -> :class:`EnvironmentFault` (the job is held, the input
    kept); "fail" -> a JobError never retried (OutcomeUnknown may already be paid for: its
    message carries the provider's request id; Refused and InvalidRequest fail the same way
    again); "retry" -> a JobError retried with backoff.
    """
    action = disposition(kind)
    if action == "hold" or kind in HELD_KINDS:
        return EnvironmentFault(message)
    return JobError(message, retryable=action != "fail")


@dataclass(frozen=True)
class ModelEvent:
    """A model the worker loaded (with the seconds it took) or unloaded to make room."""

    kind: Literal["loaded", "evicted"]
    spec: ModelSpec
    seconds: float = 0.0


def exit_reason(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Worker:
    """One worker process and the pipe to it. Not thread-safe: the pool lends it to one caller.

    ``on_model_event`` hears every load and eviction the worker reports (the pool turns them
    into hooks and counts). ``allow_env`` names variables the worker may inherit beyond
    :func:`worker_environment`'s allow-list."""

    def __init__(
        self,
        device: str,
        threads: int,
        cache_dir: Path,
        start_timeout: float = 120.0,
        memory_budget_gb: float | None = None,
        on_model_event: Callable[[Worker, ModelEvent], None] | None = None,
        allow_env: Collection[str] = (),
    ):
        self.device = device
        self.allow_env = frozenset(allow_env)
        self.threads = threads
        self.cache_dir = cache_dir
        self.start_timeout = start_timeout
        self.memory_budget_gb = memory_budget_gb
        self.on_model_event = on_model_event
        self.process: Any = None
        self.conn: Any = None
        self.info: dict[str, Any] = {}
        self.loaded: set[ModelSpec] = set()
        # weights_key -> the placement that last worked after an out-of-memory error, so the
        # next job of that model starts there instead of running out of memory again.
        self.placements: dict[ModelSpec, ModelSpec] = {}
        self.jobs_run = 0
        self.rss = 0
        self.busy = False  # lent to a caller (guarded by the pool's condition)
        self.stopped_because: str | None = None  # why the last process was stopped or replaced

    def start(self) -> None:
        from daemon.execution import worker

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker.main,
            args=(
                child,
                self.device,
                self.threads,
                str(self.cache_dir),
                self.memory_budget_gb,
                os.getpid(),
            ),
            name="darkroom-worker",
            daemon=True,
        )
        allowed = worker_environment(os.environ, self.allow_env)
        _start_from_own_thread(self.process, [name for name in os.environ if name not in allowed])
        child.close()
        self.loaded, self.jobs_run, self.rss = set(), 0, 0
        self.placements = {}
        self.stopped_because = None
        reply = self._receive(self.start_timeout)
        self.info = reply[1]
        log.info("worker started", **self.info)

    @property
    def resolved_device(self) -> str:
        """The device the process runs on (``auto`` and ``cuda`` resolved by the worker)."""
        return str(self.info.get("device") or self.device)

    def holds(self, spec: ModelSpec) -> bool:
        """The process has ``spec``'s weights loaded, under any placement."""
        from backends.runtime.placement import weights_key

        key = weights_key(spec)
        return any(weights_key(s) == key for s in self.loaded)

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def death(self) -> str:
        """Why the process is gone (or was stopped), for logs and the restart hook."""
        process = self.process
        if process is not None and not process.is_alive():
            return f"the worker process {exit_reason(process.exitcode)}"
        return self.stopped_because or "the worker process was stopped"

    def _receive(self, timeout: float) -> tuple[Any, ...]:
        deadline = time.monotonic() + timeout
        while True:
            if self.conn.poll(0.1):
                try:
                    reply: tuple[Any, ...] = self.conn.recv()
                    return reply
                except (EOFError, OSError):
                    pass  # the worker died mid-message; reported below
            process = self.process  # pool.stop() may clear it from another thread
            if process is None or not process.is_alive():
                if process is None:
                    raise WorkerDied("the worker process was stopped")
                process.join(1)
                raise WorkerDied(f"the worker process {exit_reason(process.exitcode)}")
            if time.monotonic() > deadline:
                raise JobError(f"no answer from the worker within {timeout:.0f} s")

    def call(self, message: tuple[Any, ...], timeout: float) -> Any:
        """Send one message; returns the reply's value or raises the daemon's error for it."""
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError, AttributeError):
            process = self.process
            raise WorkerDied(
                f"the worker process {exit_reason(process.exitcode if process else None)}"
            ) from None
        reply = self._receive(timeout)
        self._note(reply[-1])
        if reply[0] == "ok":
            return reply[1]
        _, kind, message_text, sticky, oom, _state = reply
        if sticky:
            raise WorkerDied(f"device error, worker replaced: {message_text}")
        if oom:
            raise OutOfMemory(message_text)
        raise backend_failure(kind, message_text)

    def _note(self, state: dict[str, Any]) -> None:
        """Take the worker's own account of what it holds, and pass on what it loaded or
        unloaded since its last reply."""
        self.loaded = set(state.get("loaded", ()))
        self.rss = state.get("rss", 0)
        for kind, spec, seconds in state.get("events", ()):
            if self.on_model_event is not None:
                self.on_model_event(self, ModelEvent(kind, spec, seconds))

    def stop(self, timeout: float = 10.0, reason: str | None = None) -> None:
        process = self.process  # the pool's stop and a caller's cleanup may race: use one handle
        if reason is not None:
            self.stopped_because = reason
        if process is None:
            return
        if process.is_alive():
            try:
                self.conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(5)
        if self.process is process:
            self.process = None
