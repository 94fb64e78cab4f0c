"""The worker pool as the daemon builds it, and its start after READY: worker, model
preloads, then the runner's loop.

One long-lived thread runs :meth:`WorkerStart.run` on purpose: a worker asks for SIGKILL
when the *thread* that spawned it ends (PR_SET_PDEATHSIG), so it must not be a thread that
finishes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import structlog

from backends.base import ModelSpec
from daemon.config.profiles import Profile
from daemon.config.settings import Settings
from daemon.execution.pool import WorkerPool
from daemon.execution.runner import Runner
from daemon.hooks import Hooks
from daemon.rules.match import RuleSet
from daemon.service.hosted_check import start_hosted_check
from daemon.service.notify import Heartbeats

__all__ = ["WorkerStart", "build_pool", "profile_label", "worker_secrets"]

log = structlog.get_logger("darkroom.app")  # the composition root's logger, as before the split


def profile_label(spec: ModelSpec, profiles: dict[str, Profile], device: str) -> str:
    """The profile a worker's model came from, for metrics: the profile whose spec it is,
    else one loading the same model (the pool's out-of-memory retries change options),
    else the model itself."""
    for name, profile in profiles.items():
        if profile.spec(device) == spec:
            return name
    for name, profile in profiles.items():
        if (profile.task, profile.model, profile.revision) == (
            spec.task,
            spec.model,
            spec.revision,
        ):
            return name
    return spec.model


def worker_secrets(profiles: dict[str, Profile]) -> set[str]:
    """The environment variables hosted profiles read their API keys from."""
    names = {p.options.get("api_key_env") for p in profiles.values() if p.provider}
    return {n for n in names if isinstance(n, str) and n}


def build_pool(
    settings: Settings,
    profiles: Callable[[], dict[str, Profile]],
    hooks: Hooks,
    beats: Heartbeats,
) -> WorkerPool:
    """The pool of ``worker``; ``profiles`` gives the current profiles (a reload swaps them)."""
    w = settings.worker
    return WorkerPool(
        w.device_list,
        w.threads,
        settings.models_dir,
        w.job_timeout,
        hooks=hooks,
        # worker.* applies only after a restart: its device is the start's for good.
        profile_of=lambda spec: profile_label(spec, profiles(), w.device),
        on_alive=lambda: beats.beat("worker"),
        cpu_threads=w.cpu_worker_threads,
        memory_budget_gb=w.memory_budget_gb,
        recycle_after_jobs=w.recycle_after_jobs,
        recycle_rss_gb=w.recycle_rss_gb,
        # Hosted profiles' key variables: the only secrets a worker is given (issue 15).
        allow_env=worker_secrets(profiles()),
    )


class WorkerStart:
    """After READY, on the thread that then runs the runner's loop: start the worker, load
    the models the rules use (reporting each step in the log and, through ``on_progress``,
    in systemd's STATUS), then run jobs; until then they wait in the queue.

    ``settings``, ``rules`` and ``profiles`` give the current ones: a reload may swap them.
    """

    def __init__(
        self,
        pool: WorkerPool,
        runner: Runner,
        beats: Heartbeats,
        *,
        settings: Callable[[], Settings],
        rules: Callable[[], RuleSet],
        profiles: Callable[[], dict[str, Profile]],
        on_progress: Callable[[], None],
    ) -> None:
        self.pool = pool
        self.runner = runner
        self.beats = beats
        self.settings = settings
        self.rules = rules
        self.profiles = profiles
        self.on_progress = on_progress
        self.step: str | None = None  # set while the worker starts and loads models

    def run(self) -> None:
        runner = self.runner
        self._progress("starting the worker")
        try:
            with _still("starting the worker"):
                self.pool.start()
        except Exception as exc:  # the runner's pool calls start a new one and report it
            log.error("the worker did not start; retried with the first job", reason=str(exc))
        if runner.stopping.is_set():
            return
        # Hosted models the rules use: exist for this key? (held profiles, not failed jobs)
        start_hosted_check(
            self.rules(), self.profiles(), runner.preparer.held, self.settings().models_dir
        )
        self._preload(runner.stopping)
        self._progress(None)
        # Health counts from here: a start or a load is not a wedged worker.
        unhealthy_after = self.settings().worker.unhealthy_after
        self.beats.beat("worker")
        self.beats.beat("runner")
        self.beats.expect("runner", unhealthy_after)
        self.beats.expect("worker", unhealthy_after)
        if not runner.stopping.is_set():
            runner.loop()

    def _progress(self, step: str | None) -> None:
        """What the worker is doing while it gets ready (None: ready), for STATUS and logs."""
        self.step = step
        if step is not None:
            log.info(step)
        self.on_progress()

    def _preload(self, stopping: threading.Event) -> None:
        """Load the models the rules use before the first file needs them."""
        used = {
            p for loaded in self.rules().rules for step in loaded.rule.steps for p in step.profiles
        }
        for number, name in enumerate(sorted(used), 1):
            if stopping.is_set():
                return
            self._progress(f"loading model {name} ({number} of {len(used)})")
            started = time.monotonic()
            try:  # the pool's hooks count the load
                with _still(f"loading model {name}"):
                    self.pool.load(self.profiles()[name].spec(self.settings().worker.device))
            except Exception as exc:  # reported again, per job, if it persists
                log.error("cannot load model", profile=name, reason=str(exc))
                continue
            log.info("model loaded", profile=name, seconds=round(time.monotonic() - started, 1))


TICK_S = 10.0  # a person watching the log is never left without a line longer than this


@contextlib.contextmanager
def _still(step: str) -> Iterator[None]:
    """Log "still <step> (N s)" every TICK_S while the block runs: importing torch and
    building or loading a model take tens of seconds with nothing else to say."""
    done = threading.Event()
    started = time.monotonic()

    def tick() -> None:
        while not done.wait(TICK_S):
            log.info(f"still {step}", seconds=round(time.monotonic() - started))

    ticker = threading.Thread(target=tick, name="darkroom-still", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
