"""Reloading the running daemon's config and rules: on SIGHUP, on a rules-folder change, and
when the files a waiting rule names appear.

A reload swaps in what can change live (profiles, rules, job retries, webhooks), each in one
assignment, or keeps everything as it is and logs why. Sources, sinks, the worker, the model
cache, metrics and the state folder are built at start: a change to them is reported and
applies after a restart.

A valid rule whose reference files do not exist yet (a folder not made or not mounted, files
not copied yet) is not a reason to refuse the others: it is set aside as a
:class:`WaitingRule`, at start and on every reload, and the rules watcher accepts it by
itself once its references match. Inputs that arrived from its sources while it waited are
offered again, so the photos dropped during the gap are processed by it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from daemon.config.profiles import Profile, resolve_profiles
from daemon.config.settings import Settings
from daemon.errors import ConfigError
from daemon.rules.load import load_rules, rule_files
from daemon.rules.match import RuleSet
from daemon.rules.references import unmatched_references
from daemon.rules.schema import Rule
from daemon.service.checks import config_problems
from daemon.service.hooks_wiring import build_webhook_sender
from daemon.service.hosted_check import start_hosted_check
from daemon.types import Arrival

if TYPE_CHECKING:
    from daemon.service.app import App

__all__ = [
    "RESTART_ONLY",
    "WaitingRule",
    "admit",
    "reload_config",
    "reload_rules",
    "rules_snapshot",
    "waiting_found",
    "watch_rules",
]

log = structlog.get_logger("darkroom.app")  # the composition root's logger, as before the split

# Settings built into running parts at start: a reload reports their change and keeps them.
RESTART_ONLY = ("state_dir", "sources", "sinks", "worker", "model_cache", "metrics")


@dataclass(frozen=True)
class WaitingRule:
    """A valid rule set aside until the reference files it names exist (or until the rule
    it follows is accepted)."""

    rule: Rule
    where: str  # file:line:col of its first reference that matches nothing yet
    waits_for: tuple[str, ...]  # the patterns matching no file yet, or "rule 'NAME'"
    since: float  # when it was set aside (time.time()): inputs seen since are offered again

    @property
    def name(self) -> str:
        return self.rule.name


def admit(
    settings: Settings,
    rules: RuleSet,
    profiles: dict[str, Profile],
    before: Mapping[str, WaitingRule] | None = None,
) -> tuple[RuleSet, dict[str, WaitingRule]]:
    """The rules to run now, and those set aside because a reference they name matches no
    file yet (with the rules that follow them). Raises ConfigError, listing every problem,
    for anything else wrong. ``before``: the rules that waited until now (their ``since``
    is kept)."""
    before = before or {}
    now = time.time()
    waiting: dict[str, WaitingRule] = {}
    # Where their missing references are named: those problems do not refuse the set.
    fixable: set[str] = set()
    for item in rules.rules:
        unmatched = unmatched_references(item.rule, settings.rules_dir, settings.reference_dirs)
        if not unmatched:
            continue
        places = [
            item.positions.where(("steps", i, "references", j), value=True) for i, j, _ in unmatched
        ]
        fixable.update(places)
        since = before[item.rule.name].since if item.rule.name in before else now
        waits_for = tuple(pattern for _, _, pattern in unmatched)
        waiting[item.rule.name] = WaitingRule(item.rule, places[0], waits_for, since)
    # A rule that follows a waiting one (after:, refine:) waits for it.
    changed = bool(waiting)
    while changed:
        changed = False
        for item in rules.rules:
            rule = item.rule
            followed = [n for n in [*rule.after, rule.refine] if n is not None and n in waiting]
            if rule.name in waiting or not followed:
                continue
            since = before[rule.name].since if rule.name in before else now
            waits = tuple(f"rule {n!r}" for n in followed)
            waiting[rule.name] = WaitingRule(rule, item.where("name"), waits, since)
            changed = True
    # Every other problem of every rule, waiting or not, refuses the set as before.
    problems = [
        p
        for p in config_problems(settings, rules, profiles)
        if not (p.missing_file and p.where in fixable)
    ]
    if problems:
        raise ConfigError(problems)
    return RuleSet([item for item in rules.rules if item.rule.name not in waiting]), waiting


def reload_config(app: App) -> bool:
    """Read the config file (if the CLI gave one) and the rules again and swap them into
    ``app`` together, or keep its running ones and set ``app.rules_error``."""
    from daemon.config.settings import load_settings

    try:
        settings = load_settings(app.config_path) if app.config_path else app.settings
        profiles = resolve_profiles(settings)
        rules, waiting = admit(
            settings, load_rules(settings.rules_dir), profiles, app.waiting_rules
        )
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
    before, app.waiting_rules = app.waiting_rules, waiting
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
    report_waiting(app, before)
    return True


def reload_rules(app: App) -> bool:
    """Swap in the rules directory's current rules if they are valid; otherwise keep the
    running ones and log every problem with file and line. Returns whether it swapped."""
    try:
        rules, waiting = admit(
            app.settings, load_rules(app.settings.rules_dir), app.profiles, app.waiting_rules
        )
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("rules not reloaded; the previous rules keep running", problem=str(problem))
        app.rules_error = str(exc)
        return False
    app.rules = rules  # one assignment: intake sees the old set or the new one, never a mix
    before, app.waiting_rules = app.waiting_rules, waiting
    app.rules_error = None
    log.info("rules reloaded", rules=len(rules), names=sorted(rules.by_name))
    report_waiting(app, before)
    return True


def report_waiting(app: App, before: Mapping[str, WaitingRule]) -> None:
    """Log the rules set aside now, and the ones accepted since ``before``; offer the
    inputs that arrived while a rule waited to it again."""
    for name, rule in app.waiting_rules.items():
        if name not in before:
            log_waiting(rule)
    for name, rule in before.items():
        if name in app.waiting_rules or name not in app.rules.by_name:
            continue
        log.info(
            f"rule {name} accepted: {', '.join(rule.waits_for)} now found",
            rule=name,
            waited_s=round(time.time() - rule.since, 1),
        )
        offer_again(app, app.rules.by_name[name].rule, rule.since)


def log_waiting(rule: WaitingRule) -> None:
    log.warning(
        f"rule {rule.name} waits: {', '.join(rule.waits_for)} matches no file yet;"
        " it is accepted once it does (no reload needed)",
        rule=rule.name,
        where=rule.where,
    )


def offer_again(app: App, rule: Rule, since: float) -> None:
    """Hand intake again the inputs ``rule``'s sources handled since ``since`` whose name
    it takes: intake plans them with the rules now running (a plan another rule made
    already is not made twice; a file gone since is logged and skipped)."""
    ledger = app.ledger
    if ledger is None:
        return
    only = RuleSet([app.rules.by_name[rule.name]])
    offered: dict[str, int] = {}
    for source in rule.match.source_names:
        config = app.settings.sources.get(source)
        if config is None:
            continue
        root = config.where()  # what the source puts before a key in a uri
        for _, key, size, mtime_ns, etag in ledger.seen_since(since, [source]):
            arrival = Arrival(source, key, root + key, size, mtime_ns, etag)
            if only.matching(arrival, shallow=True):
                app.intake.emit(arrival)
                offered[source] = offered.get(source, 0) + 1
    if offered:
        log.info(
            "inputs that arrived while the rule waited are offered to it",
            rule=rule.name,
            inputs=offered,
        )


def waiting_found(app: App) -> bool:
    """Whether a rule set aside for its references would be accepted now (they match)."""
    settings = app.settings
    return any(
        not unmatched_references(w.rule, settings.rules_dir, settings.reference_dirs)
        for w in app.waiting_rules.values()
        if not w.waits_for[0].startswith("rule ")
    )


RulesSnapshot = tuple[tuple[str, int, int], ...]


def rules_snapshot(rules_dir: Path) -> RulesSnapshot:
    """Each rule file's name, mtime and size: a change to any of them is a reload."""
    out = []
    for path in rule_files(rules_dir):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((path.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def watch_rules(
    settings: Callable[[], Settings],
    stopped: threading.Event,
    reload: Callable[[], bool],
    found: Callable[[], bool] = lambda: False,
    baseline: RulesSnapshot | None = None,
) -> None:
    """Poll the rules directory (cheap: a stat per file) and reload on any change, or when
    ``found`` says a waiting rule's files exist now, until ``stopped``. ``settings`` gives
    the current settings: a reload may move the folder. ``baseline``: the files as they
    were when the running rules were read (an edit made during the start is not missed)."""
    last = rules_snapshot(settings().rules_dir) if baseline is None else baseline
    while not stopped.wait(settings().rules_reload_interval):
        current = rules_snapshot(settings().rules_dir)
        if current != last:
            last = current
            reload()
        elif found():
            reload()
