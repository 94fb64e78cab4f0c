"""Offline: the model profiles a rule uses can run here — weights present, hosted keys set.

Weights are looked up without loading anything (no torch): a ``random:`` twin is built on
first use; a local folder must hold a diffusers pipeline (``model_index.json``); a hub id must
be in the Hugging Face cache with the folder of every component its ``model_index.json``
lists. Missing weights are an error when the hub is off (``HF_HUB_OFFLINE=1``, as the unit and
``make`` set it) and a warning otherwise (the first job downloads them). A hosted profile
needs its API key (environment, ``LoadCredential=`` or ``api_key_file``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import yamlfile
from daemon.config.profiles import Profile
from daemon.diagnose import rule_checks
from daemon.errors import Problem

NO_WEIGHTS_TASKS = ("rendition", "stub")


@dataclass(frozen=True)
class Readiness:
    """Whether one profile can run here: ``ok``, else what is missing and the fix;
    ``blocking`` separates errors (jobs would be held) from warnings (first use downloads)."""

    ok: bool
    message: str = ""
    fix: str | None = None
    blocking: bool = True


def readiness(profile: Profile) -> Readiness:
    """Whether ``profile``'s weights (or hosted key) are here; never loads a model."""
    if profile.provider:
        return _hosted(profile)
    if profile.task in NO_WEIGHTS_TASKS or profile.model.startswith("random:"):
        return Readiness(True)  # random twins are built offline on first use
    local = Path(profile.model).expanduser()
    if profile.model.startswith(("/", ".", "~")) or local.is_dir():
        if (local / "model_index.json").is_file() or (local / "config.json").is_file():
            return Readiness(True)
        return Readiness(
            False,
            f"profile {profile.name!r}: {local} is not a model folder (no model_index.json)",
            "point the profile's model at a folder saved with save_pretrained, or a hub id",
        )
    missing = _hub_missing(profile.model, profile.revision, "model_index.json")
    adapter = profile.options.get("ip_adapter")
    if missing is None and isinstance(adapter, str) and not adapter.startswith("random:"):
        sub = str(profile.options.get("ip_adapter_subfolder") or "")
        weight = str(profile.options.get("ip_adapter_weight_name") or "")
        if weight:
            name = f"{sub}/{weight}" if sub else weight
            if _cached(adapter, None, name) is None:
                missing = f"{adapter} ({name}) is not in the Hugging Face cache"
    if missing is None:
        return Readiness(True)
    from backends.runtime import hub

    gated = _gated(profile.name)
    fix = (
        f"run `darkroom models pull {profile.name}` (or `hf download {profile.model}`) where "
        "the hub is reachable, with the same HF_HOME"
        + ("; the repository is gated: accept its licence and set HF_TOKEN" if gated else "")
    )
    if hub.offline():
        return Readiness(False, f"profile {profile.name!r}: {missing} (HF_HUB_OFFLINE)", fix)
    return Readiness(
        False,
        f"profile {profile.name!r}: {missing}; the first job downloads it",
        fix,
        blocking=False,
    )


def _hosted(profile: Profile) -> Readiness:
    from backends import backend_class
    from backends.base import ModelUnavailable
    from backends.hosted import api_key

    try:
        cls = backend_class(profile.task)
        api_key(profile.spec("cpu"), profile.provider or "", str(getattr(cls, "key_env", "")))
    except ModelUnavailable as exc:
        return Readiness(False, f"profile {profile.name!r}: {exc}", "set the key, then reload")
    except Exception as exc:  # noqa: BLE001 - an optional client missing: say what it was
        return Readiness(False, f"profile {profile.name!r}: {type(exc).__name__}: {exc}")
    return Readiness(True)


def _hub_missing(repo: str, revision: str | None, filename: str) -> str | None:
    """What is missing of a cached diffusers pipeline, or None when it is all here."""
    index = _cached(repo, revision, filename)
    if index is None:
        rev = f" at revision {revision}" if revision else ""
        return f"{repo}{rev} is not in the Hugging Face cache ({_cache_dir()})"
    try:
        components = json.loads(Path(index).read_text())
    except (OSError, ValueError):
        return f"{repo}: its cached {filename} cannot be read; download it again"
    snapshot = Path(index).parent
    absent = [
        name
        for name, value in components.items()
        if not name.startswith("_")
        and isinstance(value, list)
        and value[0] is not None
        and not (snapshot / name).is_dir()
    ]
    if absent:
        return f"{repo} is only partly in the cache (missing: {', '.join(sorted(absent))})"
    return None


def _cached(repo: str, revision: str | None, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            repo, filename, cache_dir=_cache_dir(), revision=revision or None
        )
    except ValueError:  # not a valid repo id
        return None
    return found if isinstance(found, str) else None


def _cache_dir() -> str:
    from backends.runtime import hub

    found = hub.hf_cache_dir()
    if found:
        return found
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _gated(name: str) -> bool:
    from backends import cards

    card = cards.card(name)
    return bool(card and card.gated)


def weight_problems(
    files: Iterable[tuple[dict[str, Any], yamlfile.Positions]], profiles: dict[str, Profile]
) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings): each use of a profile that cannot run here, at the step's model.
    ``files``: each rule file's data as written and its key positions (valid or not)."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    known: dict[str, Readiness] = {}
    for data, positions in files:
        for loc, name in rule_checks.profile_uses(data):
            profile = profiles.get(name)
            if profile is None:
                continue  # an unknown name is cross_check's problem
            if name not in known:
                known[name] = readiness(profile)
            state = known[name]
            if state.ok:
                continue
            problem = Problem(positions.where(loc, value=True), state.message, state.fix)
            (errors if state.blocking else warnings).append(problem)
    return errors, warnings
