"""The start-up check of the hosted models the rules use: does each exist for the configured key?

A retired model id, a refused key or an account with no credits would otherwise show only when
the first job pays for a request — and fail it. After READY, on its own thread (the providers'
model look-ups take a network round trip each, and cost nothing),
:func:`backends.hosted.check_model` asks the provider about every hosted profile a rule
names:

- ConfigurationFault: the profile is *held* — an error in the log naming the profile, the
  rules that use it and the fix; its jobs are held when they are prepared (EnvironmentFault:
  the input stays, the job resumes once the configuration is fixed and reloaded);
- any other BackendError (provider unreachable, 5xx): a warning; jobs run and find out.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path

import structlog

from daemon.config.profiles import Profile
from daemon.rules.match import RuleSet

log = structlog.get_logger("darkroom.hosted")

__all__ = ["check_hosted_models", "hosted_profiles_in_use", "start_hosted_check"]


def hosted_profiles_in_use(rules: RuleSet, profiles: Mapping[str, Profile]) -> dict[str, list[str]]:
    """Hosted profile name -> the rules whose steps name it, in rule order."""
    used: dict[str, list[str]] = {}
    for item in rules.rules:
        for step in item.rule.steps:
            for name in step.profiles:
                profile = profiles.get(name)
                if profile is not None and profile.hosted:
                    names = used.setdefault(name, [])
                    if item.rule.name not in names:
                        names.append(item.rule.name)
    return used


def check_hosted_models(
    rules: RuleSet,
    profiles: Mapping[str, Profile],
    held: MutableMapping[str, str],
    cache_dir: Path,
) -> None:
    """Check each hosted profile in use; a configuration fault puts the profile in ``held``
    (profile name -> the reason its jobs are held), a passing check takes it out."""
    from backends.base import BackendError, ConfigurationFault
    from backends.hosted import check_model

    for name, rule_names in hosted_profiles_in_use(rules, profiles).items():
        profile = profiles[name]
        try:
            check_model(profile.spec("cpu"), cache_dir)
        except ConfigurationFault as exc:
            reason = (
                f"hosted model profile {name!r} ({profile.provider} model {profile.model}) "
                f"failed its start-up check: {exc}"
            )
            held[name] = reason
            log.error(
                "hosted model unusable: its jobs are held until the configuration is fixed",
                profile=name,
                model=profile.model,
                rules=rule_names,
                reason=str(exc),
                fix=(
                    f"set profiles.{name}.model to a current model id, or the key/credits the "
                    "message names, then reload (SIGHUP) or restart"
                ),
            )
        except BackendError as exc:
            log.warning(
                "hosted model could not be checked; its jobs will try",
                profile=name,
                model=profile.model,
                rules=rule_names,
                reason=str(exc),
            )
        else:
            held.pop(name, None)
            log.info("hosted model checked", profile=name, model=profile.model)


def start_hosted_check(
    rules: RuleSet,
    profiles: Mapping[str, Profile],
    held: MutableMapping[str, str],
    cache_dir: Path,
) -> threading.Thread:
    """:func:`check_hosted_models` on a daemon thread (never delays READY or the first job)."""

    def run() -> None:
        try:
            check_hosted_models(rules, profiles, held, cache_dir)
        except Exception:  # a bug here must not take the daemon down; jobs still find out
            log.exception("hosted model check failed")

    thread = threading.Thread(target=run, name="darkroom-hosted-check", daemon=True)
    thread.start()
    return thread
