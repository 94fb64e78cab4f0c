"""The composition root: builds every part from the settings, starts and stops them.

Start order: state lock -> ledger (and crash recovery) -> intake -> sources (whose startup
scans feed intake) -> READY; then, on the runner's thread, worker -> model preloads -> the
runner's loop (jobs queued meanwhile wait for their model). Stop order is the reverse: intake stops
first, so nothing new starts; the running job may finish until ``stop_timeout``; what
is left stays queued in the ledger for the next start.

Observers are wired here and nowhere else: metrics, settlement and webhooks each implement
:class:`daemon.hooks.Hooks`, and one :class:`~daemon.hooks.HookChain` of them is given to
the runner and the worker pool.

Each concern the root wires lives in its own module: :mod:`~daemon.service.checks` (config
cross-checks, sources and sinks), :mod:`~daemon.service.hooks_wiring` (webhooks, decision
announcing), :mod:`~daemon.service.worker_start` (pool, worker start, preloads),
:mod:`~daemon.service.runner_wiring` (runner, C2PA signer, decoder),
:mod:`~daemon.service.state_open` (ledger, crash leftovers), :mod:`~daemon.service.periodic`
(scheduler jobs), :mod:`~daemon.service.reload` (SIGHUP and rules-folder reloads),
:mod:`~daemon.service.metrics_wiring` (the /metrics server), :mod:`~daemon.service.status`
(STATUS line, held report) and :mod:`~daemon.service.shutdown` (the bounded stop).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from daemon.config.profiles import resolve_profiles
from daemon.config.settings import Settings
from daemon.errors import ConfigError
from daemon.execution.runner import Runner
from daemon.hooks import HookChain
from daemon.intake.decide_process import ChildSetup, DecideProcess
from daemon.intake.intake import Intake
from daemon.intake.settlement import Settlement, SettleThread
from daemon.queue.ledger import Ledger
from daemon.review.log import DecisionLog
from daemon.review.server import ReviewServer
from daemon.review.triggers import DecisionTriggers, FollowUps
from daemon.rules.load import load_rules
from daemon.service import periodic, shutdown
from daemon.service import reload as reloading
from daemon.service.checks import build_sinks, build_sources, config_problems
from daemon.service.health import PartHealth, PartState
from daemon.service.hooks_wiring import DecisionAnnouncer, WebhookHooks, build_webhook_sender
from daemon.service.metrics import Metrics, Readiness
from daemon.service.metrics_wiring import build_metrics_server, start_metrics_server
from daemon.service.notify import Heartbeats, Notifier, Watchdog
from daemon.service.probes import build_probes
from daemon.service.runner_wiring import build_runner, content_credentials, start_decoder
from daemon.service.shutdown import STOP_GRACE, start_thread
from daemon.service.state_lock import StateLock
from daemon.service.state_open import open_ledger, remove_temp_files, requeue_interrupted
from daemon.service.status import held_report, status_line
from daemon.service.webhooks import WebhookSender
from daemon.service.worker_start import WorkerStart, build_pool
from daemon.sources.base import Source
from daemon.sources.decided import DecidedOutputs

# Re-exported: the CLI, `darkroom check` and tests import these from here.
__all__ = ["STOP_GRACE", "App", "build_sinks", "build_sources", "config_problems"]

log = structlog.get_logger("darkroom.app")


class App:
    """The daemon: every part built from the settings, started and stopped in order."""

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
        # A rule whose reference files do not exist yet waits (accepted once they do);
        # any other problem refuses the start (daemon.service.reload.admit).
        self.rules_read = reloading.rules_snapshot(settings.rules_dir)  # the watcher's baseline
        self.rules, self.waiting_rules = reloading.admit(
            settings, load_rules(settings.rules_dir), self.profiles
        )
        for waiting in self.waiting_rules.values():
            reloading.log_waiting(waiting)
        self.any_source = any_source
        self.lock = StateLock(settings.state_dir)
        self.sources = build_sources(settings) if sources is None else sources
        self.sinks = build_sinks(settings)
        if not any_source:
            # Outputs a reviewer decided on, read back for the rules that follow decisions.
            for sink in self.sinks.values():
                decided = DecidedOutputs(sink)
                self.sources[decided.name] = decided
        self.ledger: Ledger | None = None
        # Health: systemd's watchdog, /healthz and /readyz all read these.
        self.notifier = Notifier.from_env(unset=True)  # before workers spawn: they must not notify
        self.beats = Heartbeats()
        self.readiness = Readiness(("sources", "rules", "worker"))
        self.readiness.report("held", lambda: held_report(self.ledger))
        # Can each source and sink be reached? Checked on the scheduler; a failing one makes
        # /readyz false and shows in STATUS, `darkroom status` and darkroom_{source,sink}_up.
        self.health = PartHealth(
            {}
            if any_source
            else build_probes(
                {n: c for n, c in settings.sources.items() if n in self.sources}, settings.sinks
            ),
            on_change=self._part_changed,
        )
        self.metrics = Metrics(
            job_counts=lambda: self.ledger.counts_by_rule() if self.ledger else {},
            ledger=lambda: self.ledger,
            sources=lambda: sorted(self.sources),
            health=self.health.states,
        )
        self.watchdog = Watchdog(self.notifier, self.notifier.watchdog_interval, self.beats.check)
        self.metrics_server = build_metrics_server(
            settings, self.metrics, self.beats, self.readiness, any_source=any_source
        )
        self.webhooks: WebhookSender | None = build_webhook_sender(
            settings, self.metrics.webhook_failed, any_source=any_source
        )
        # Settlement joins the chain at start (it needs the ledger); hooks are called only
        # once the runner and the pool run.
        self.hooks = HookChain([self.metrics, WebhookHooks(lambda: self.webhooks)])
        self.pool = build_pool(settings, lambda: self.profiles, self.hooks, self.beats)
        self.stopped = threading.Event()
        self.scheduler: Any = None
        # Review decisions: the log (an outbox in the ledger), its announcer and the server,
        # made at start.
        self.decisions: DecisionLog | None = None
        self.announcer: DecisionAnnouncer | None = None
        self.review_server: ReviewServer | None = None
        self.rules_error: str | None = None
        self.runner: Runner | None = None
        self.worker_start: WorkerStart | None = None  # made at start, run after READY
        self._last_status = 0.0
        self.threads: list[threading.Thread] = []  # the runner's: joined when stopping
        # Threads still running when stop() returned (stuck on a network call, say): the
        # process must then end without the interpreter's exit handlers, which may wait.
        self.left_behind: list[str] = []
        self.settle_thread = SettleThread()  # sources' acknowledgements, off the runner's thread

    def start(self) -> None:
        """State lock -> credentials -> metrics -> ledger -> runner -> intake -> sources ->
        READY; the worker starts after READY, on the runner's thread."""
        self.lock.acquire()
        try:
            self.credentials = content_credentials(self.settings)
        except BaseException:
            self.lock.release()
            raise
        if self.metrics_server is not None:
            try:
                start_metrics_server(self.metrics_server, self.settings)
            except ConfigError:
                self.lock.release()
                raise
        ledger = self._open_state()
        runner = self._build_runner(ledger)
        self.readiness.mark("rules", True)
        if self.webhooks is not None:
            self.webhooks.start()
        self._start_intake(ledger, runner)
        # READY does not wait for the worker: its start (torch, diffusers) and the model
        # loads take tens of seconds, while intake only needs the ledger. Jobs queue up
        # meanwhile; the runner starts once the worker is up, and a job whose model is
        # still loading waits for the worker that loads it (the pool lends it when done).
        # Ready means "takes files", as READY=1 does: /readyz agrees with systemd; STATUS
        # and the log say what the worker is doing meanwhile.
        self.readiness.mark("worker", True)
        self.worker_start = WorkerStart(
            self.pool,
            runner,
            self.beats,
            settings=lambda: self.settings,
            rules=lambda: self.rules,
            profiles=lambda: self.profiles,
            on_progress=self._publish_status,
        )
        self.threads.append(start_thread(self.worker_start.run, "darkroom-runner"))
        for source in self.sources.values():
            source.start(self.intake.emit, self.intake.known_for(source.name))
        self.readiness.mark("sources", True)
        self._start_periodic(ledger)
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

    def _open_state(self) -> Ledger:
        """The ledger, a crash's leftovers cleaned, the decision log (and the review server
        that writes it), and running work queued again."""
        self.ledger = open_ledger(self.settings)
        remove_temp_files(self.sinks)
        self.decisions = DecisionLog(self.settings.state_dir / "ledger.sqlite")
        self.announcer = DecisionAnnouncer(self.decisions, self.sinks, self.hooks)
        if self.settings.review.enabled and not self.any_source:
            self.review_server = ReviewServer(
                self.sinks, self.settings.review, on_decided=self.announcer.record
            )
            self.review_server.start()
        requeue_interrupted(self.ledger)
        return self.ledger

    def _build_runner(self, ledger: Ledger) -> Runner:
        """Settlement, the runner and its decoder; plans that ended before a crash finalized."""
        self.settlement = Settlement(
            self.sources,
            lambda pid: ledger.plan(pid).state,
            ledger.plan_states,
            run=self.settle_thread,
        )
        self.hooks.add(self.settlement)
        self.runner = build_runner(
            self.settings,
            ledger,
            self.sources,
            self.sinks,
            self.pool,
            self.profiles,
            hooks=self.hooks,
            tick=lambda: self.beats.beat("runner"),
            credentials=self.credentials,
        )
        self.decoder = start_decoder(self.settings, self.runner)
        # Per plan, errors logged and backed off: no single plan can keep the daemon down.
        self.runner.finalize_ended()
        return self.runner

    def _start_intake(self, ledger: Ledger, runner: Runner) -> None:
        """Intake, and the hooks through which decisions start follow-up rules."""
        self.intake = intake = Intake(
            ledger,
            lambda: self.rules,
            self.sources,
            runner.wake.set,
            any_source=self.any_source,
            settlement=self.settlement,
            rules_dir=self.settings.rules_dir,
            reference_dirs=self.settings.reference_dirs,
            limits=self.settings.limits,
            decide_process=self._decide_process(),
        )
        intake.start()
        # Decisions start follow-up rules (on: approved, refine) and link their outputs.
        self.hooks.add(DecisionTriggers(intake.emit, lambda: self.rules))
        self.hooks.add(FollowUps(self.sinks))

    def _decide_process(self) -> DecideProcess | None:
        """The second process a burst is decided in, for the sources it can read (folders);
        None when there are none. It starts with the first burst."""
        readers = {
            name: reader
            for name, source in self.sources.items()
            if (reader := source.reader_factory()) is not None
        }
        if not readers:
            return None
        setup = ChildSetup(
            readers,
            self.settings.rules_dir,
            dict(self.settings.reference_dirs),
            self.settings.limits,
            self.any_source,
            logging.getLogger().getEffectiveLevel(),
        )
        return DecideProcess(setup)

    def _start_periodic(self, ledger: Ledger) -> None:
        """The scheduler's jobs, and the rules folder's watcher."""
        assert self.announcer is not None  # made by _open_state()
        self.scheduler = periodic.start_scheduler(
            lambda: self.settings,
            ledger=ledger,
            sources=self.sources,
            sinks=self.sinks,
            metrics=self.metrics,
            health=self.health,
            announce_decisions=self.announcer.announce,
            any_source=self.any_source,
            # Jobs held for a missing mask resume as soon as it is there.
            missing_files=self.runner.preparer.missing if self.runner else None,
            wake=self.runner.wake.set if self.runner else lambda: None,
        )
        if self.settings.rules_reload_interval > 0 and not self.any_source:
            threading.Thread(
                target=lambda: reloading.watch_rules(
                    lambda: self.settings,
                    self.stopped,
                    self.reload_rules,
                    found=lambda: reloading.waiting_found(self),
                    baseline=self.rules_read,
                ),
                name="darkroom-rules",
                daemon=True,
            ).start()

    # -- health and status -----------------------------------------------------------

    def heartbeat(self) -> None:
        """Called by the main loop every half second: it is alive, and systemd hears why."""
        self.beats.beat("main")
        now = time.monotonic()
        if now - self._last_status >= 5:
            self._last_status = now
            self.notifier.status(self.status_line())

    def _part_changed(self, state: PartState) -> None:
        """A source or sink started failing or recovered: /readyz and STATUS say so now."""
        self.readiness.mark(state.part, bool(state.ok), state.error, since=state.since)
        self._publish_status()

    def _publish_status(self) -> None:
        """Send systemd the current status line."""
        self.notifier.status(self.status_line())

    def status_line(self) -> str:
        return status_line(
            self.ledger.counts() if self.ledger else {},
            worker_step=self.worker_start.step if self.worker_start else None,
            failing=self.health.failing(),
            last_error=(self.runner.last_error if self.runner else None) or self.rules_error,
            waiting_rules=[
                f"{w.name} for {', '.join(w.waits_for)}" for w in self.waiting_rules.values()
            ],
        )

    def started_parts(self) -> tuple[Ledger, Runner]:
        """The ledger and the runner, which exist from :meth:`start` on."""
        if self.ledger is None or self.runner is None:
            raise RuntimeError("the daemon is not started")
        return self.ledger, self.runner

    def daily_digest(self, day: datetime.date | None = None) -> list[str]:
        """Yesterday's (or ``day``'s) index sheets, one per rule, in every sink."""
        return periodic.daily_digest(self.sinks, day)

    # -- reloading ---------------------------------------------------------------------

    def reload(self) -> bool:
        """SIGHUP: read the config file and the rules again and swap them in together, or
        keep everything as it is and report why. Sources, sinks, the worker and the state
        directory are built at start: changes to them are reported and need a restart."""
        self.notifier.reloading()
        self.readiness.set_phase("reloading")
        ok = False  # an unexpected error is reported as a refused reload, never hidden
        try:
            ok = reloading.reload_config(self)
        finally:
            self.readiness.set_phase("running")
            self.notifier.ready(
                status=self.status_line() if ok else f"reload refused: {self.rules_error}"
            )
        return ok

    def reload_rules(self) -> bool:
        """Swap in the rules folder's rules if valid (see :func:`daemon.service.reload.reload_rules`)."""
        return reloading.reload_rules(self)

    # -- stopping ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop intake, let the running job finish until the deadline, keep the rest queued.

        Bounded: the process ends within ``worker.stop_timeout`` + ``STOP_GRACE`` s whatever
        its sources, sinks and webhook receivers do (see :mod:`daemon.service.shutdown`).
        """
        shutdown.stop(self)
