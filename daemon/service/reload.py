"""Reloading the running daemon's config and rules: on SIGHUP, and on a rules-folder change.

A reload swaps in what can change live (profiles, rules, job retries, webhooks), each in one
assignment, or keeps everything as it is and logs why. Sources, sinks, the worker, the model
cache, metrics and the state folder are built at start: a change to them is reported and
applies after a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from daemon.config.profiles import resolve_profiles
from daemon.config.settings import Settings
from daemon.errors import ConfigError
from daemon.rules.load import load_rules, rule_files
from daemon.service.checks import config_problems
from daemon.service.hooks_wiring import build_webhook_sender
from daemon.service.hosted_check import start_hosted_check

if TYPE_CHECKING:
    from daemon.service.app import App

__all__ = ["RESTART_ONLY", "reload_config", "reload_rules", "watch_rules"]

log = structlog.get_logger("darkroom.app")  # the composition root's logger, as before the split

# Settings built into running parts at start: a reload reports their change and keeps them.
RESTART_ONLY = ("state_dir", "sources", "sinks", "worker", "model_cache", "metrics")


def reload_config(app: App) -> bool:
    """Read the config file (if the CLI gave one) and the rules again and swap them into
    ``app`` together, or keep its running ones and set ``app.rules_error``."""
    from daemon.config.settings import load_settings

    try:
        settings = load_settings(app.config_path) if app.config_path else app.settings
        profiles = resolve_profiles(settings)
        rules = load_rules(settings.rules_dir)
        problems = config_problems(settings, rules, profiles)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload refused; the running config and rules stay", problem=str(problem))
        app.rules_error = str(exc)
        return False
    fixed = [key for key in RESTART_ONLY if getattr(settings, key) != getattr(app.settings, key)]
    if fixed:
        log.warning("these settings changed but apply only after a restart", keys=fixed)
    # Swap what can change live, each in one assignment.
    ledger, runner = app.started_parts()
    app.profiles = profiles
    runner.profiles = profiles
    app.rules = rules
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
    if settings.webhooks != app.settings.webhooks:
        old = app.webhooks
        app.webhooks = build_webhook_sender(
            settings, app.metrics.webhook_failed, any_source=app.any_source
        )
        if app.webhooks is not None:
            app.webhooks.start()
        if old is not None:
            old.stop(timeout=5)
    app.settings = settings.model_copy(update={k: getattr(app.settings, k) for k in fixed})
    app.rules_error = None
    log.info("config and rules reloaded", rules=len(rules), names=sorted(rules.by_name))
    return True


def reload_rules(app: App) -> bool:
    """Swap in the rules directory's current rules if they are valid; otherwise keep the
    running ones and log every problem with file and line. Returns whether it swapped."""
    try:
        rules = load_rules(app.settings.rules_dir)
        problems = config_problems(app.settings, rules, app.profiles)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("rules not reloaded; the previous rules keep running", problem=str(problem))
        app.rules_error = str(exc)
        return False
    app.rules = rules  # one assignment: intake sees the old set or the new one, never a mix
    app.rules_error = None
    log.info("rules reloaded", rules=len(rules), names=sorted(rules.by_name))
    return True


def watch_rules(
    settings: Callable[[], Settings], stopped: threading.Event, reload: Callable[[], bool]
) -> None:
    """Poll the rules directory (cheap: a stat per file) and reload on any change, until
    ``stopped``. ``settings`` gives the current settings: a reload may move the folder."""

    def snapshot() -> tuple[tuple[str, int, int], ...]:
        files = rule_files(settings().rules_dir)
        out = []
        for path in files:
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    last = snapshot()
    while not stopped.wait(settings().rules_reload_interval):
        current = snapshot()
        if current != last:
            last = current
            reload()
