"""Config-and-rules cross-checks, and the configured sources and sinks built by name.

``darkroom check``, the daemon's start and every reload run the same checks, so a config
the daemon would refuse is refused by ``check`` too, with the same words.
"""

from __future__ import annotations

from daemon.config.profiles import Profile
from daemon.config.settings import Settings
from daemon.diagnose.paths import moved_into_sink_problems
from daemon.errors import Problem
from daemon.rules.inputs import input_problems
from daemon.rules.load import cross_check
from daemon.rules.match import RuleSet
from daemon.rules.sizes import size_problems
from daemon.sinks import build_sink
from daemon.sinks.base import Sink
from daemon.sources import build_source
from daemon.sources.base import Source

__all__ = ["build_sinks", "build_sources", "config_problems"]


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
    problems += input_problems(rules, profiles)  # briefs: text-to-image; companions: multi
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
    # A processed/quarantine folder inside a sink: moved inputs would show up as outputs.
    problems += moved_into_sink_problems(rules, settings)
    if not rules.rules:
        problems.append(Problem(str(settings.rules_dir), "no rule files (*.yaml) found"))
    return problems


def build_sources(settings: Settings) -> dict[str, Source]:
    return {name: build_source(name, cfg) for name, cfg in settings.sources.items()}


def build_sinks(settings: Settings) -> dict[str, Sink]:
    return {name: build_sink(name, cfg) for name, cfg in settings.sinks.items()}
