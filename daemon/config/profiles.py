"""Model profiles as the daemon sees them: built-ins merged with the config's overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backends.base import ModelSpec
from backends.profiles import PROFILES
from daemon.config.settings import Settings


@dataclass(frozen=True)
class Profile:
    name: str
    task: str
    model: str
    revision: str | None = None
    dtype: str = "auto"
    max_side: int | None = 512
    defaults: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    role: str = "custom"
    about: str = ""
    vram_gb: float | None = None
    provider: str | None = None  # hosted models: who runs them
    price_per_image: float | None = None  # USD, an estimate (hosted models)
    price_per_megapixel: float | None = None

    @property
    def hosted(self) -> bool:
        return self.provider is not None

    def spec(self, device: str) -> ModelSpec:
        options = dict(self.options)
        # Prices live on the profile (config can override them); backends estimate cost.
        for key in ("price_per_image", "price_per_megapixel"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        return ModelSpec(
            task=self.task,
            model=self.model,
            revision=self.revision,
            device=device,
            dtype=self.dtype,
            options=ModelSpec.freeze_options(options),
        )


def resolve_profiles(settings: Settings) -> dict[str, Profile]:
    """Built-in profiles with the config's field overrides applied, plus new ones."""
    merged: dict[str, dict[str, Any]] = {name: dict(fields) for name, fields in PROFILES.items()}
    builtin = {name: dict(fields) for name, fields in merged.items()}
    for name, override in settings.profiles.items():
        given = override.model_dump(exclude_unset=True)
        like = given.pop("like", None)
        if like is not None and like not in builtin and like not in settings.profiles:
            from daemon.errors import ConfigError

            raise ConfigError(f"profiles.{name}.like: unknown profile {like!r}")
        base = (
            builtin.get(like) or merged.get(like) if like else merged.get(name, {"role": "custom"})
        ) or {}
        # options and defaults merge key by key: overriding base_url keeps api_key_env.
        for key in ("options", "defaults"):
            if key in given:
                given[key] = {**base.get(key, {}), **given[key]}
        merged[name] = {**base, **given}
    profiles = {}
    for name, fields in merged.items():
        if not fields.get("task") or not fields.get("model"):
            from daemon.errors import ConfigError

            raise ConfigError(f"profiles.{name}: a new profile needs both 'task' and 'model'")
        profiles[name] = Profile(name=name, **fields)
    return profiles
