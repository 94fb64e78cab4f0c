"""``darkroom models``: the profiles and their weights; ``darkroom models pull``: fetch them.

    darkroom models [--all] [--json]               profiles by role: licence, gating, price
    darkroom models pull PROFILE... | --all-used   download what those profiles load

``pull`` is the one command that goes online: it fetches into the Hugging Face cache the
daemon loads from (``HF_HOME``), before the first job, so that no job waits on (or times out
in) a download. What it fetches is decided by the loader's own code
(:mod:`backends.runtime.pull`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.config.profiles import Profile
    from daemon.config.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    config_help = "config file (default: $DARKROOM_CONFIG or ./darkroom.yaml)"
    p = sub.add_parser("models", help="list model profiles; `models pull` fetches weights")
    p.add_argument("--config", "-c", help=config_help)
    p.add_argument("--all", action="store_true", help="also the tiny, benchmark and test profiles")
    p.add_argument("--json", action="store_true", help="one JSON object per profile")
    p.set_defaults(func=cmd_models)
    actions = p.add_subparsers(dest="models_command", metavar="{pull}")
    pull = actions.add_parser("pull", help="download the weights of profiles (goes online)")
    pull.add_argument("profiles", nargs="*", metavar="PROFILE")
    pull.add_argument("--all-used", action="store_true", help="every local profile the rules use")
    # SUPPRESS: when not given here, the value given before `pull` stands.
    pull.add_argument("--config", "-c", help=config_help, default=argparse.SUPPRESS)
    pull.set_defaults(func=cmd_pull)


def _settings(args: argparse.Namespace) -> Settings:
    from daemon.cli.main import _settings as settings_with_logging

    return settings_with_logging(args)


def weights_status(profile: Profile, models_dir: Path) -> str:
    """Where a profile's weights are, without loading them (and without torch)."""
    model = profile.model
    if profile.provider:
        env = profile.options.get("api_key_env")
        return (
            f"hosted ({env} {'set' if env and os.environ.get(env) else 'NOT set'})"
            if env
            else "hosted"
        )
    if profile.task in ("rendition", "stub"):
        return "no weights needed"
    if model.startswith("random:"):
        from backends import random_models

        name = model.split(":", 1)[1]
        try:
            built = models_dir / "random" / f"{name}-{random_models.config_digest(name)}"
        except Exception:
            return "unknown random config"
        return "built" if built.is_dir() else "built on first use (offline)"
    if Path(model).expanduser().is_dir():
        return "local directory"
    from huggingface_hub import try_to_load_from_cache

    from backends.runtime.hub import hf_cache_dir

    found = try_to_load_from_cache(
        model, "model_index.json", cache_dir=hf_cache_dir(), revision=profile.revision
    )
    return (
        "in HF cache"
        if isinstance(found, str)
        else f"MISSING: download into HF_HOME (darkroom models pull {profile.name})"
    )


# Roles whose profiles are for tests and benchmarks: listed only with --all.
HIDDEN_ROLES = ("benchmark", "test")


def hidden_profile(profile: Profile) -> bool:
    """Tiny random-weight twins, benchmarks and the stub: not for a user's rules."""
    return profile.role in HIDDEN_ROLES or profile.model.startswith("random:")


def model_row(profile: Profile, models_dir: Path) -> dict[str, object]:
    """What ``darkroom models`` says about one profile (``--json`` prints these)."""
    from backends import cards

    card = cards.card(profile.name)
    price = profile.price_per_image
    return {
        "profile": profile.name,
        "role": profile.role,
        "task": profile.task,
        "model": profile.model,
        "vram_gb": profile.vram_gb,
        "licence": card.licence if card else None,
        "licence_url": card.licence_url if card else None,
        "commercial": card.commercial if card else None,
        "gated": card.gated if card else None,
        "provider": profile.provider,
        "price_per_image": price,
        "weights": weights_status(profile, models_dir),
    }


def cmd_models(args: argparse.Namespace) -> int:
    from daemon.config.profiles import resolve_profiles

    settings = _settings(args)
    profiles = resolve_profiles(settings)
    shown = [p for p in profiles.values() if args.all or not hidden_profile(p)]
    shown.sort(key=lambda p: (p.role, p.name))
    rows = [model_row(p, settings.models_dir) for p in shown]
    if args.json:
        from daemon.cli.output import print_json

        print_json(rows)
        return 0
    header = ("PROFILE", "TASK", "MODEL", "VRAM GB", "LICENCE", "GATED", "PRICE", "WEIGHTS")
    table: list[tuple[str, ...] | str] = []
    role = None
    for row in rows:
        if row["role"] != role:
            role = row["role"]
            table.append(f"{role}:")
        vram, price, gated = row["vram_gb"], row["price_per_image"], row["gated"]
        table.append(
            (
                f"  {row['profile']}",
                str(row["task"]),
                str(row["model"]),
                "" if not vram else f"{vram:g}",
                str(row["licence"] or ("provider terms" if row["provider"] else "")),
                "" if gated is None else ("yes: HF_TOKEN" if gated else "no"),
                "" if price is None else f"${price:.3f}/image",
                str(row["weights"]),
            )
        )
    lines = [header] + [r for r in table if isinstance(r, tuple)]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    for item in [header, *table]:
        if isinstance(item, str):
            print(item)
            continue
        print("  ".join(c.ljust(w) for c, w in zip(item, widths, strict=True)).rstrip())
    if not args.all:
        hidden = len(profiles) - len(shown)
        print(f"({hidden} test and benchmark profiles hidden: --all shows them)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Fetch each named profile's weights; exit 1 if any could not be fetched, 2 on misuse."""
    from backends.runtime.pull import offline_refusal

    refusal = offline_refusal()  # before anything else: say it once, with the override
    if refusal:
        print(f"darkroom models pull: {refusal}", file=sys.stderr)
        return 2
    from daemon.config.profiles import resolve_profiles

    settings = _settings(args)
    import logging

    for name in ("httpx", "httpx2"):  # a log line per HTTP request would drown the progress
        logging.getLogger(name).setLevel(logging.WARNING)
    # diffusers warns that components without fp16 files load their default ones: that is
    # how every fp16 repo is (tokenizers, schedulers), not news for whoever pulls it.
    logging.getLogger("diffusers.pipelines.pipeline_loading_utils").setLevel(logging.ERROR)
    profiles = resolve_profiles(settings)
    names = list(dict.fromkeys(args.profiles))
    if args.all_used:
        names += [n for n in used_profiles(settings) if n not in names]
    if not names:
        print(
            "darkroom models pull: name the profiles to fetch (darkroom models lists them) "
            "or pass --all-used for every profile the rules use",
            file=sys.stderr,
        )
        return 2
    unknown = [n for n in names if n not in profiles]
    if unknown:
        print(
            f"darkroom models pull: unknown profile(s) {', '.join(unknown)}; "
            "`darkroom models --all` lists them",
            file=sys.stderr,
        )
        return 2
    failed = 0
    for name in names:
        failed += not _pull_one(profiles[name], settings)
    return 1 if failed else 0


def used_profiles(settings: Settings) -> list[str]:
    """Every profile a step of a rule names, in rule order."""
    from daemon.rules.load import load_rules

    rules = load_rules(settings.rules_dir)
    names: list[str] = []
    for loaded in rules.rules:
        for step in loaded.rule.steps:
            names += [n for n in step.profiles if n not in names]
    return names


def _pull_one(profile: Profile, settings: Settings) -> bool:
    """Fetch one profile; print what happened. False if it failed."""
    from backends import backend_class
    from backends.base import BackendError
    from backends.runtime.pull import human, pull

    status = weights_status(profile, settings.models_dir)
    if profile.provider or profile.task in ("rendition", "stub"):
        print(f"{profile.name}: nothing to download ({status})")
        return True
    if profile.model.startswith("random:") or Path(profile.model).expanduser().is_dir():
        print(f"{profile.name}: nothing to download ({status}: {profile.model})")
        return True
    pipeline_class = getattr(backend_class(profile.task), "pipeline_class", None)
    if pipeline_class is None:
        print(f"{profile.name}: task {profile.task} loads no pipeline; nothing to download")
        return True
    print(f"{profile.name}: {profile.model}" + (f"@{profile.revision}" if profile.revision else ""))
    try:
        fetched = pull(
            profile.spec("cpu"), pipeline_class, out=sys.stdout, bars=sys.stderr.isatty()
        )
    except BackendError as exc:
        print(f"{profile.name}: FAILED: {exc}", file=sys.stderr)
        return False
    total = sum(f.total_bytes for f in fetched)
    got = sum(f.downloaded_bytes for f in fetched)
    print(
        f"{profile.name}: ready, {human(total)} in {sum(len(f.files) for f in fetched)} files "
        f"({human(got)} downloaded) in {fetched[0].location}"
    )
    return True
