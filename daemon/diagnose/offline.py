"""``darkroom check``: everything knowable without network or device, every problem at once.

The order is the order a user fixes things in, but nothing waits for an earlier stage to be
clean: a config that fails to load still has its rule files read (with default settings'
folders unknown, they are skipped); a rule file that fails validation still has its source,
sink and model names checked against the config (``DraftRule``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.config import yamlfile
from daemon.diagnose import paths, profiles
from daemon.diagnose.findings import CheckReport, in_file_order
from daemon.errors import ConfigError

if TYPE_CHECKING:
    from daemon.config.settings import Settings


def check_configuration(config: Path | None) -> CheckReport:
    """Load the config and every rule file and run every offline check on what loaded."""
    from daemon.config.profiles import resolve_profiles
    from daemon.config.settings import load_settings
    from daemon.rules.load import cross_check, output_collisions, read_rules

    report = CheckReport()
    dropped: set[str] = set()
    try:
        report.settings = settings = load_settings(config)
    except ConfigError as exc:
        report.add_errors(exc.problems)
        # Go on with the keys that are valid, so the rules' problems show in the same run.
        lenient = _without_invalid_keys(config)
        if lenient is None:
            rules_dir = _rules_dir_of(config)
            if rules_dir is not None:
                report.add_errors(read_rules(rules_dir).problems)
            report.errors = in_file_order(report.errors)
            return report
        settings, dropped = lenient
        report.settings = settings  # without the invalid keys: the live checks can still run
    rules_read = read_rules(settings.rules_dir)
    report.rules = rules = rules_read.rules
    report.add_errors(rules_read.problems)
    try:
        report.profiles = known = resolve_profiles(settings)
    except ConfigError as exc:
        report.add_errors(exc.problems)
        known = None
    where = _config_where(config)
    files = [(item.raw(), item.positions) for item in rules.rules]
    files += [(draft.data, draft.positions) for draft in rules_read.drafts]
    if known is not None:
        from daemon.service.app import config_problems

        report.add_errors(config_problems(settings, rules, known))
        if rules_read.drafts:
            report.add_errors(
                cross_check(
                    type(rules)([]),
                    set(settings.sources),
                    set(settings.sinks),
                    set(known),
                    drafts=rules_read.drafts,
                )
            )
        if not rules.rules and rules_read.problems:
            # config_problems says "no rule files" when none is valid; they exist, and
            # their own problems are listed.
            report.errors = [
                p for p in report.errors if p.message != "no rule files (*.yaml) found"
            ]
        if dropped:  # a source or sink the config failed to define is not also "unknown"
            report.errors = [
                p
                for p in report.errors
                if not any(p.message.startswith(f"unknown {what}") for what in dropped)
            ]
        errors, warnings = profiles.weight_problems(files, known)
        report.add_errors(errors)
        report.warnings += warnings
    errors, warnings = paths.folder_problems(settings, where)
    report.add_errors(errors)
    report.warnings += warnings
    if settings.outputs.c2pa is not None:  # the signer the daemon proves at start
        from daemon.outputs.c2pa import ContentCredentials

        c = settings.outputs.c2pa
        try:
            ContentCredentials.load(c.cert, c.key, c.alg, c.timestamp_url)
        except ConfigError as exc:
            report.add_errors(exc.problems)
    if known is None:  # else config_problems (the daemon's own start check) has them
        report.add_errors(paths.moved_into_sink_problems(rules, settings))
    report.add_errors(
        paths.rule_file_problems(files, settings.rules_dir, settings.reference_dirs),
        unless_placed=True,
    )
    report.warnings += output_collisions(rules)
    report.errors = in_file_order(report.errors)
    report.warnings = in_file_order(report.warnings)
    return report


def _config_where(config: Path | None) -> paths.Where:
    """Where a config key is: ``file:line:col`` when the file sets it, else the key path."""
    positions: yamlfile.Positions | None = None
    if config is not None:
        try:
            positions = yamlfile.load(config)[1]
        except ConfigError:
            positions = None

    def where(loc: tuple[str | int, ...]) -> str:
        if positions is not None and positions.has(loc):
            return positions.where(loc, value=True)
        return f"{config or 'config'}: {'.'.join(map(str, loc))}"

    return where


def _without_invalid_keys(config: Path | None) -> tuple[Settings, set[str]] | None:
    """The settings with every invalid key of the file left out (defaults instead), and the
    names of the sources and sinks left out ("source 'drop'"); None when even that fails
    (an environment variable is wrong, or the file is not a mapping)."""
    from pydantic import ValidationError

    from daemon.config import settings as config_module

    if config is None:
        return None
    try:
        raw, positions = yamlfile.load(config)
    except ConfigError:
        return None
    if not isinstance(raw, dict):
        return None
    dropped: set[str] = set()
    for _ in range(10):
        data = config_module._absolutize(raw, config.resolve().parent)
        try:
            return config_module._resolved(config_module.Settings(**data)), dropped
        except ValidationError as exc:
            pruned = False
            for err in exc.errors():
                loc = positions.user_loc(err["loc"])[:2]
                if len(loc) == 2 and loc[0] in ("sources", "sinks"):
                    dropped.add(f"{'source' if loc[0] == 'sources' else 'sink'} {loc[1]!r}")
                pruned = _drop(raw, loc) or pruned
            if not pruned:
                return None
    return None


def _drop(data: dict[str, Any], loc: tuple[str | int, ...]) -> bool:
    """Remove the key at ``loc`` (a key path of at most two parts); whether it was there."""
    if not loc:
        return False
    holder: Any = data
    for part in loc[:-1]:
        holder = holder.get(part) if isinstance(holder, dict) else None
    if isinstance(holder, dict) and loc[-1] in holder:
        del holder[loc[-1]]
        return True
    return False


def _rules_dir_of(config: Path | None) -> Path | None:
    """The rules folder a config that does not load names (or the default), if readable."""
    import os

    raw: object = {}
    if config is not None:
        try:
            raw = yamlfile.load(config)[0]
        except ConfigError:
            return None
    base = config.resolve().parent if config is not None else Path.cwd()
    value = os.environ.get("DARKROOM_RULES_DIR") or (
        raw.get("rules_dir") if isinstance(raw, dict) else None
    )
    if value is not None and not isinstance(value, str):
        return None
    if os.environ.get("DARKROOM_RULES_DIR"):
        return Path(value or "rules").resolve()
    return (base / (value or "rules")).resolve()
