"""The composition root: builds every part from the settings, starts and stops them.

Start order: state lock -> ledger (and crash recovery) -> intake -> sources (whose startup
scans feed intake) -> READY; then, on the runner's thread, worker -> model preloads -> the
runner's loop (jobs queued meanwhile wait for their model). Stop order is the reverse: intake stops
first, so nothing new starts; the running job may finish until ``stop_timeout``; what
is left stays queued in the ledger for the next start.

Observers are wired here and nowhere else: metrics, settlement and webhooks each implement
:class:`daemon.hooks.Hooks`, and one :class:`~daemon.hooks.HookChain` of them is given to
the runner and the worker pool.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from backends.base import ModelSpec
from daemon.config.profiles import Profile, resolve_profiles
from daemon.config.settings import Settings
from daemon.errors import ConfigError, Problem
from daemon.execution.pool import WorkerPool
from daemon.execution.runner import Runner
from daemon.hooks import HookChain, Hooks
from daemon.intake.intake import Intake
from daemon.intake.settlement import Settlement
from daemon.outputs.manifest import Manifest
from daemon.outputs.paths import page_path_for
from daemon.queue.ledger import Ledger
from daemon.rules.load import cross_check, load_rules, rule_files
from daemon.rules.match import RuleSet
from daemon.rules.sizes import size_problems
from daemon.service.hosted_check import start_hosted_check
from daemon.service.metrics import Metrics, MetricsServer, Readiness
from daemon.service.notify import Heartbeats, Notifier, Watchdog
from daemon.service.state_lock import StateLock
from daemon.service.webhooks import WebhookSender, event_from_manifest
from daemon.sinks import build_sink
from daemon.sinks.base import Sink
from daemon.sources import build_source
from daemon.sources.base import Source

log = structlog.get_logger("darkroom.app")


# Seconds beyond worker.stop_timeout that stopping may take: workers, sources, webhooks.
STOP_GRACE = 5.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _left(deadline: float, floor: float = 0.0) -> float:
    """Seconds until ``deadline`` (monotonic), at least ``floor``."""
    return max(floor, deadline - time.monotonic())


def _start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def config_problems(
    settings: Settings, rules: RuleSet, profiles: dict[str, Profile]
) -> list[Problem]:
    """Problems that only show with config and rules together (``darkroom check``)."""
    problems = cross_check(
        rules,
        set(settings.sources),
        set(settings.sinks),
        set(profiles),
        settings.reference_dirs,
        settings.rules_dir,
    )
    problems += size_problems(rules, profiles)  # explicit sizes the step's model refuses
    for sink_name, sink in settings.sinks.items():
        for source_name, source in settings.sources.items():
            out, watched = sink.where(), source.where()
            # Locations end in "/" (folders) or are bucket prefixes: overlap is a prefix test.
            if out.startswith(watched) or watched.startswith(out):
                problems.append(
                    Problem(
                        f"config: sinks.{sink_name}",
                        f"{out} overlaps the watched location of source {source_name!r} ({watched}); "
                        "outputs would be picked up as new inputs — write them somewhere else",
                    )
                )
    if not rules.rules:
        problems.append(Problem(str(settings.rules_dir), "no rule files (*.yaml) found"))
    return problems


def build_sources(settings: Settings) -> dict[str, Source]:
    return {name: build_source(name, cfg) for name, cfg in settings.sources.items()}


def build_sinks(settings: Settings) -> dict[str, Sink]:
    return {name: build_sink(name, cfg) for name, cfg in settings.sinks.items()}


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


class WebhookHooks(Hooks):
    """Sends the webhook event of each committed manifest (to whichever sender is current:
    a reload may replace it)."""

    def __init__(self, sender: Callable[[], WebhookSender | None]):
        self.sender = sender

    def plan_committed(self, sink: Sink, manifest: Manifest, manifest_path: str) -> None:
        sender = self.sender()
        if sender is None:
            return
        sender.send(
            event_from_manifest(
                manifest,
                manifest_url=sink.location(manifest_path),
                sheet_url=sink.location(manifest.sheet) if manifest.sheet else None,
                page_url=sink.location(page_path_for(manifest_path)),
                output_url=sink.location,
            )
        )


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        sources: dict[str, Source] | None = None,
        any_source: bool = False,
    ):
        self.settings = settings
        self.config_path: Path | None = None  # set by the CLI, for SIGHUP reloads
        self.profiles = resolve_profiles(settings)
        self.rules = load_rules(settings.rules_dir)
        problems = config_problems(settings, self.rules, self.profiles)
        if problems:
            raise ConfigError(problems)
        self.any_source = any_source
        self.lock = StateLock(settings.state_dir)
        self.sources = build_sources(settings) if sources is None else sources
        self.sinks = build_sinks(settings)
        self.ledger: Ledger | None = None
        # Health: systemd's watchdog, /healthz and /readyz all read these.
        self.notifier = Notifier.from_env(unset=True)  # before workers spawn: they must not notify
        self.beats = Heartbeats()
        self.readiness = Readiness(("sources", "rules", "worker"))
        self.readiness.report("held", self._held_report)
        self.metrics = Metrics(
            job_counts=lambda: self.ledger.counts_by_rule() if self.ledger else {}
        )
        self.watchdog = Watchdog(self.notifier, self.notifier.watchdog_interval, self.beats.check)
        m = settings.metrics
        self.metrics_server = (
            MetricsServer(
                m.host, m.port, self.metrics, health=self.beats.check, ready=self.readiness.check
            )
            if m.enabled and not any_source
            else None
        )
        self.webhooks = self._webhooks(settings)
        # Settlement joins the chain at start (it needs the ledger); hooks are called only
        # once the runner and the pool run.
        self.hooks = HookChain([self.metrics, WebhookHooks(lambda: self.webhooks)])
        w = settings.worker
        self.pool = WorkerPool(
            w.device_list,
            w.threads,
            settings.models_dir,
            w.job_timeout,
            hooks=self.hooks,
            profile_of=lambda spec: profile_label(spec, self.profiles, self.settings.worker.device),
            on_alive=lambda: self.beats.beat("worker"),
            cpu_threads=w.cpu_worker_threads,
            memory_budget_gb=w.memory_budget_gb,
            recycle_after_jobs=w.recycle_after_jobs,
            recycle_rss_gb=w.recycle_rss_gb,
        )
        self.stopped = threading.Event()
        self.scheduler: Any = None
        self.rules_error: str | None = None
        self.runner: Runner | None = None
        self._last_status = 0.0
        self._threads: list[threading.Thread] = []
        self._worker_step: str | None = None  # set while the worker starts and loads models

    def _webhooks(self, settings: Settings) -> WebhookSender | None:
        w = settings.webhooks
        if not w.urls or self.any_source:
            return None
        return WebhookSender(
            w.urls,
            w.secret.get_secret_value() if w.secret else None,
            timeout=w.timeout,
            max_attempts=w.max_attempts,
            backoff=w.backoff,
            queue_size=w.queue_size,
            on_failure=self.metrics.webhook_failed,
            legacy_signature=w.legacy_signature,
        )

    def start(self) -> None:
        self.lock.acquire()
        if self.metrics_server is not None:
            try:
                self.metrics_server.start()
                log.info("metrics listening", url=self.metrics_server.url)
            except OSError as exc:
                self.lock.release()
                m = self.settings.metrics
                raise ConfigError(
                    f"metrics: cannot listen on {m.host}:{m.port}: {exc.strerror}; "
                    "choose another metrics.port"
                ) from None
        self.ledger = Ledger(
            self.settings.state_dir / "ledger.sqlite",
            max_attempts=self.settings.jobs.max_attempts,
            retry_backoff=self.settings.jobs.retry_backoff,
            hold_backoff=self.settings.jobs.hold_backoff,
            hold_backoff_max=self.settings.jobs.hold_backoff_max,
        )
        for sink in self.sinks.values():
            if removed := sink.cleanup_temp():
                log.info(
                    "removed temp files left by an earlier crash", sink=sink.name, files=removed
                )
        requeued = self.ledger.recover()
        if requeued:
            log.warning(
                "work that was running when the daemon stopped is queued again", jobs=requeued
            )
        ledger = self.ledger
        self.settlement = Settlement(
            self.sources, lambda pid: ledger.plan(pid).state, ledger.plan_states
        )
        self.hooks.add(self.settlement)
        self.runner = Runner(
            self.ledger,
            self.sources,
            self.sinks,
            self.pool,
            self.profiles,
            self.settings.worker.device,
            hooks=self.hooks,
            tick=lambda: self.beats.beat("runner"),
            ping_interval=self.settings.worker.ping_interval,
            max_batch=self.settings.worker.max_batch,
            max_wait_ms=self.settings.worker.max_wait_ms,
            priorities=self.settings.worker.priorities,
        )
        # Per plan, errors logged and backed off: no single plan can keep the daemon down.
        self.runner.finalize_ended()
        self.readiness.mark("rules", True)
        if self.webhooks is not None:
            self.webhooks.start()
        self.intake = Intake(
            self.ledger,
            lambda: self.rules,
            self.sources,
            self.runner.wake.set,
            any_source=self.any_source,
            settlement=self.settlement,
            rules_dir=self.settings.rules_dir,
            reference_dirs=self.settings.reference_dirs,
        )
        self.intake.start()
        # READY does not wait for the worker: its start (torch, diffusers) and the model
        # loads take tens of seconds, while intake only needs the ledger. Jobs queue up
        # meanwhile; the runner starts once the worker is up, and a job whose model is
        # still loading waits for the worker that loads it (the pool lends it when done).
        # Ready means "takes files", as READY=1 does: /readyz agrees with systemd; STATUS
        # and the log say what the worker is doing meanwhile.
        self.readiness.mark("worker", True)
        self._threads.append(_start_thread(self._start_worker, "darkroom-runner"))
        for source in self.sources.values():
            source.start(self.intake.emit, self.intake.known_for(source.name))
        self.readiness.mark("sources", True)
        self._schedule_periodic()
        if self.settings.rules_reload_interval > 0 and not self.any_source:
            threading.Thread(target=self._watch_rules, name="darkroom-rules", daemon=True).start()
        self.beats.expect("main", 30)  # the runner and the worker once it is up
        self.readiness.set_phase("running")
        self.notifier.ready(status=self.status_line())
        self.watchdog.start()
        log.info(
            "darkroom running",
            rules=len(self.rules),
            sources=sorted(self.sources),
            sinks=sorted(self.sinks),
            state_dir=str(self.settings.state_dir),
            worker="starting",
        )

    # -- health and status -----------------------------------------------------------

    def heartbeat(self) -> None:
        """Called by the main loop every half second: it is alive, and systemd hears why."""
        self.beats.beat("main")
        now = time.monotonic()
        if now - self._last_status >= 5:
            self._last_status = now
            self.notifier.status(self.status_line())

    def _held_report(self) -> dict[str, Any]:
        """Held jobs for /readyz: how many, and the distinct reasons of the latest ones."""
        if self.ledger is None:
            return {"jobs": 0, "reasons": []}
        rows, total = self.ledger.held(limit=50)
        return {"jobs": total, "reasons": sorted({r.error or "" for r in rows})[:10]}

    def status_line(self) -> str:
        counts = self.ledger.counts() if self.ledger else {}
        depth = counts.get("queued", 0) + counts.get("waiting", 0)
        text = (
            f"queue {depth}, running {counts.get('running', 0)}, failed {counts.get('failed', 0)}"
        )
        if held := counts.get("held", 0):
            text += f", held {held} (see darkroom status)"
        if self._worker_step is not None:
            text = f"{self._worker_step}; {text}"
        last = (self.runner.last_error if self.runner else None) or self.rules_error
        return f"{text}; last error: {last[:200]}" if last else text

    def _started(self) -> tuple[Ledger, Runner]:
        """The ledger and the runner, which exist from :meth:`start` on."""
        if self.ledger is None or self.runner is None:
            raise RuntimeError("the daemon is not started")
        return self.ledger, self.runner

    def _source_lag(self) -> None:
        ledger, _ = self._started()
        oldest = ledger.oldest_active_by_source()
        now = time.time()
        for name in self.sources:
            self.metrics.set_source_lag(name, now - oldest[name] if name in oldest else 0.0)

    def _maintenance(self) -> None:
        days = self.settings.maintenance.retention_days
        ledger, _ = self._started()
        removed = ledger.prune(time.time() - days * 86400)
        orphans = sum(sink.cleanup_temp(older_than=3600) for sink in self.sinks.values())
        log.info(
            "maintenance",
            ledger_rows_pruned=removed,
            temp_files_removed=orphans,
            retention_days=days,
        )

    # -- reloading ---------------------------------------------------------------------

    def reload(self) -> bool:
        """SIGHUP: read the config file and the rules again and swap them in together, or
        keep everything as it is and report why. Sources, sinks, the worker and the state
        directory are built at start: changes to them are reported and need a restart."""
        self.notifier.reloading()
        self.readiness.set_phase("reloading")
        try:
            ok = self._reload_config()
        finally:
            self.readiness.set_phase("running")
            self.notifier.ready(
                status=self.status_line() if ok else f"reload refused: {self.rules_error}"
            )
        return ok

    def _reload_config(self) -> bool:
        from daemon.config.settings import load_settings

        try:
            settings = load_settings(self.config_path) if self.config_path else self.settings
            profiles = resolve_profiles(settings)
            rules = load_rules(settings.rules_dir)
            problems = config_problems(settings, rules, profiles)
            if problems:
                raise ConfigError(problems)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused; the running config and rules stay", problem=str(problem))
            self.rules_error = str(exc)
            return False
        fixed = [
            key
            for key in ("state_dir", "sources", "sinks", "worker", "model_cache", "metrics")
            if getattr(settings, key) != getattr(self.settings, key)
        ]
        if fixed:
            log.warning("these settings changed but apply only after a restart", keys=fixed)
        # Swap what can change live, each in one assignment.
        ledger, runner = self._started()
        self.profiles = profiles
        runner.profiles = profiles
        self.rules = rules
        # A fixed key, model id or credit balance must take effect now: forget the start-up
        # verdicts and check again with the new profiles (a still-broken model is held again).
        runner.preparer.held.clear()
        start_hosted_check(rules, profiles, runner.preparer.held, settings.models_dir)
        ledger.max_attempts = settings.jobs.max_attempts
        ledger.retry_backoff = settings.jobs.retry_backoff
        ledger.hold_backoff = settings.jobs.hold_backoff
        ledger.hold_backoff_max = settings.jobs.hold_backoff_max
        if resumed := ledger.resume_held(everything=True):
            log.info("held jobs try again after the reload", jobs=len(resumed))
            runner.wake.set()
        if settings.webhooks != self.settings.webhooks:
            old, self.webhooks = self.webhooks, self._webhooks(settings)
            if self.webhooks is not None:
                self.webhooks.start()
            if old is not None:
                old.stop(timeout=5)
        self.settings = settings.model_copy(update={k: getattr(self.settings, k) for k in fixed})
        self.rules_error = None
        log.info("config and rules reloaded", rules=len(rules), names=sorted(rules.by_name))
        return True

    def reload_rules(self) -> bool:
        """Swap in the rules directory's current rules if they are valid; otherwise keep the
        running ones and log every problem with file and line. Returns whether it swapped."""
        try:
            rules = load_rules(self.settings.rules_dir)
            problems = config_problems(self.settings, rules, self.profiles)
            if problems:
                raise ConfigError(problems)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error(
                    "rules not reloaded; the previous rules keep running", problem=str(problem)
                )
            self.rules_error = str(exc)
            return False
        self.rules = rules  # one assignment: intake sees the old set or the new one, never a mix
        self.rules_error = None
        log.info("rules reloaded", rules=len(rules), names=sorted(rules.by_name))
        return True

    def _watch_rules(self) -> None:
        """Poll the rules directory (cheap: a stat per file) and reload on any change."""

        def snapshot() -> tuple[tuple[str, int, int], ...]:
            files = rule_files(self.settings.rules_dir)
            out = []
            for path in files:
                try:
                    st = path.stat()
                except OSError:
                    continue
                out.append((path.name, st.st_mtime_ns, st.st_size))
            return tuple(out)

        last = snapshot()
        while not self.stopped.wait(self.settings.rules_reload_interval):
            current = snapshot()
            if current != last:
                last = current
                self.reload_rules()

    def _schedule_periodic(self) -> None:
        """One scheduler per daemon (never a shared job store): sources' periodic work,
        maintenance, the daily digest and the source-lag gauge."""
        from daemon.service.scheduling import build_scheduler

        self.scheduler = build_scheduler()
        if not self.any_source:
            self.scheduler.add_job(
                self._maintenance,
                "interval",
                seconds=self.settings.maintenance.prune_interval,
                id="maintenance",
                max_instances=1,
                coalesce=True,
            )
            self.scheduler.add_job(
                self._source_lag,
                "interval",
                seconds=15,
                id="source-lag",
                max_instances=1,
                coalesce=True,
                next_run_time=_now(),
            )
        if self.settings.digest.enabled and not self.any_source:
            hour, minute = map(int, self.settings.digest.at.split(":"))
            self.scheduler.add_job(
                self.daily_digest,
                "cron",
                hour=hour,
                minute=minute,
                id="digest",
                max_instances=1,
                coalesce=True,
            )
        for source in self.sources.values():
            for task in source.periodic():
                self.scheduler.add_job(
                    task.function,
                    "interval",
                    seconds=task.interval_s,
                    id=f"{source.name}:{task.name}",
                    max_instances=1,
                    coalesce=True,
                    next_run_time=_now(),
                )
        self.scheduler.start()

    def daily_digest(self, day: datetime.date | None = None) -> list[str]:
        """Yesterday's (or ``day``'s) index sheets, one per rule, in every sink."""
        from daemon.outputs.digest import build_digest

        day = day or datetime.date.today() - datetime.timedelta(days=1)
        written = []
        for sink in self.sinks.values():
            try:
                written += build_digest(sink, day)
            except Exception:  # a digest is a view: log and carry on
                log.exception("daily digest failed", sink=sink.name, day=str(day))
        log.info("daily digest written", day=str(day), files=len(written))
        return written

    def _start_worker(self) -> None:
        """After READY, on the thread that then runs the runner's loop: start the worker,
        load the models the rules use (reporting each step in the log and in systemd's
        STATUS), then run jobs; until then they wait in the queue.

        One long-lived thread on purpose: a worker asks for SIGKILL when the *thread* that
        spawned it ends (PR_SET_PDEATHSIG), so it must not be a thread that finishes."""
        _, runner = self._started()
        self._progress("starting the worker")
        try:
            self.pool.start()
        except Exception as exc:  # the runner's pool calls start a new one and report it
            log.error("the worker did not start; retried with the first job", reason=str(exc))
        if runner.stopping.is_set():
            return
        # Hosted models the rules use: exist for this key? (held profiles, not failed jobs)
        start_hosted_check(
            self.rules, self.profiles, runner.preparer.held, self.settings.models_dir
        )
        self._preload(runner.stopping)
        self._progress(None)
        # Health counts from here: a start or a load is not a wedged worker.
        unhealthy_after = self.settings.worker.unhealthy_after
        self.beats.beat("worker")
        self.beats.beat("runner")
        self.beats.expect("runner", unhealthy_after)
        self.beats.expect("worker", unhealthy_after)
        if not runner.stopping.is_set():
            runner.loop()

    def _progress(self, step: str | None) -> None:
        """What the worker is doing while it gets ready (None: ready), for STATUS and logs."""
        self._worker_step = step
        if step is not None:
            log.info(step)
        self.notifier.status(self.status_line())

    def _preload(self, stopping: threading.Event) -> None:
        """Load the models the rules use before the first file needs them."""
        used = {
            p for loaded in self.rules.rules for step in loaded.rule.steps for p in step.profiles
        }
        for number, name in enumerate(sorted(used), 1):
            if stopping.is_set():
                return
            self._progress(f"loading model {name} ({number} of {len(used)})")
            started = time.monotonic()
            try:  # the pool's hooks count the load
                self.pool.load(self.profiles[name].spec(self.settings.worker.device))
            except Exception as exc:  # reported again, per job, if it persists
                log.error("cannot load model", profile=name, reason=str(exc))
                continue
            log.info("model loaded", profile=name, seconds=round(time.monotonic() - started, 1))

    def stop(self) -> None:
        """Stop intake, let the running job finish until the deadline, keep the rest queued.

        Bounded: the process ends within ``worker.stop_timeout`` + ``STOP_GRACE`` s whatever
        its sources, sinks and webhook receivers do. Sources stop on their own threads while
        the running job drains (an S3 receiver stuck on a dead endpoint costs no extra
        time), and every later step gets what is left of the grace.
        """
        log.info("stopping: no new work is taken")
        started = time.monotonic()
        job_deadline = started + self.settings.worker.stop_timeout
        final_deadline = job_deadline + STOP_GRACE
        self.notifier.stopping("draining: finishing the running job")
        self.readiness.set_phase("stopping")
        self.watchdog.stop()
        ledger, runner = self._started()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)  # its jobs run on daemon threads
        source_stops = [
            _start_thread(source.stop, f"darkroom-stop:{name}")
            for name, source in self.sources.items()
        ]
        self.intake.stop(timeout=_left(job_deadline, floor=0.5))
        runner.stopping.set()
        runner.wake.set()
        for thread in self._threads:
            thread.join(_left(job_deadline))
        if any(t.is_alive() for t in self._threads):
            log.warning(
                "running job did not finish in time; it stays queued",
                timeout=self.settings.worker.stop_timeout,
            )
        self.pool.stop(timeout=_left(final_deadline, floor=0.5))
        for thread in self._threads:
            thread.join(_left(final_deadline, floor=0.5))
        for name, thread in zip(self.sources, source_stops, strict=True):
            thread.join(_left(final_deadline, floor=0.1))
            if thread.is_alive():
                log.warning("source did not stop in time; left behind", source=name)
        if self.webhooks is not None:
            self.webhooks.stop(timeout=_left(final_deadline, floor=0.5))
        ledger.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.lock.release()
        self.stopped.set()
        self.notifier.close()
        log.info("stopped", seconds=round(time.monotonic() - started, 2))
