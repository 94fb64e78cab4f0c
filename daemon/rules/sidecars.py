"""Sidecars: per-file values next to an image (``photo.txt``, ``photo.json``, ``photo.yaml``)
and its mask (``photo.mask.png``) -- their names and how a sidecar file is parsed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar

from daemon.config import yamlfile
from daemon.errors import ConfigError, InputError
from daemon.types import SidecarRef


@dataclass
class Sidecar:
    """Per-file values next to an image: ``photo.txt`` (plain text: the prompt, and the
    ``{sidecar}`` variable) or ``photo.json`` / ``photo.yaml`` (``vars`` plus overrides of
    prompt, negative_prompt, seed, steps). ``fault``: why an existing sidecar cannot be used
    (:meth:`broken`); its plans fail with that reason."""

    key: str
    sha256: str
    vars: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    text: str | None = None  # a .txt sidecar's text, never a template
    fault: str | None = None

    OVERRIDES: ClassVar[tuple[str, ...]] = ("prompt", "negative_prompt", "seed", "steps", "vars")

    @property
    def ref(self) -> SidecarRef:
        """What a plan records of its sidecar: which file, which bytes, what is wrong."""
        return SidecarRef(key=self.key, sha256=self.sha256, fault=self.fault)

    @classmethod
    def broken(cls, key: str, data: bytes, fault: str) -> Sidecar:
        """A sidecar that exists but cannot be used: it still identifies the plan (a fixed
        or another broken version is new work) and carries the reason."""
        return cls(key, hashlib.sha256(data).hexdigest(), fault=fault)

    @classmethod
    def parse(cls, key: str, data: bytes) -> Sidecar:
        """Parse a sidecar's bytes; a broken one raises InputError saying what is wrong --
        whatever the parser met (deep nesting, wrong types), never another exception."""
        try:
            return cls._parse(key, data)
        except InputError:
            raise
        except RecursionError:
            raise InputError(f"{key}: sidecar is nested too deeply to read") from None
        except Exception as exc:  # a parser's surprise is still the file's fault
            raise InputError(
                f"{key}: sidecar cannot be read ({type(exc).__name__}: {exc})"
            ) from None

    @classmethod
    def _parse(cls, key: str, data: bytes) -> Sidecar:
        sha = hashlib.sha256(data).hexdigest()
        try:
            text = data.decode("utf-8-sig")  # a BOM from a Windows editor is not text
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{key}: sidecar is not UTF-8 text (byte {exc.start}); save it as UTF-8"
            ) from None
        if key.lower().endswith(".txt"):
            # Plain text, exactly as written: "Summer sale {50% off}" is not a template.
            return cls(key, sha, prompt=text.strip(), text=text.strip())
        kind = "JSON" if key.lower().endswith(".json") else "YAML"
        try:
            values = json.loads(text) if kind == "JSON" else yamlfile.loads(text, key)[0]
        except (ValueError, ConfigError) as exc:
            raise InputError(f"{key}: sidecar is not valid {kind}: {exc}") from None
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise InputError(f"{key}: sidecar must be a mapping of {', '.join(cls.OVERRIDES)}")
        unknown = {str(k) for k in values} - set(cls.OVERRIDES)
        if unknown:
            raise InputError(
                f"{key}: unknown sidecar key(s) {', '.join(sorted(unknown))};"
                f" allowed: {', '.join(cls.OVERRIDES)}"
            )
        for label in ("prompt", "negative_prompt"):
            value = values.get(label)
            if value is not None and not isinstance(value, str):
                raise InputError(
                    f"{key}: sidecar {label} must be text, not {_kind(value)}"
                    f' (quote it: {label}: "...")'
                )
        variables = values.get("vars") or {}
        if not isinstance(variables, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for k, v in variables.items()
        ):
            raise InputError(f"{key}: sidecar vars must be a mapping of names to text or numbers")
        seed, steps = values.get("seed"), values.get("steps")
        for label, number in (("seed", seed), ("steps", steps)):
            if number is not None and (
                not isinstance(number, int) or isinstance(number, bool) or number < 0
            ):
                raise InputError(f"{key}: sidecar {label} must be a whole number >= 0")
        return cls(
            key,
            sha,
            vars=dict(variables),
            prompt=values.get("prompt"),
            negative_prompt=values.get("negative_prompt"),
            seed=seed,
            steps=steps,
        )


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


SIDECAR_SUFFIXES = (".txt", ".json", ".yaml", ".yml")
MASK_SUFFIX = ".mask.png"

# The image extensions tried when a sidecar arrives before (or without) a new image:
# lower case and the common upper-case spellings cameras and exporters write.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".tif",
    ".tiff",
    ".bmp",
    ".heic",
    ".heif",
    ".avif",
    ".HEIC",
    ".JPG",
    ".JPEG",
    ".PNG",
    ".WEBP",
)


def sidecar_keys(image_key: str) -> list[str]:
    """The keys where ``image_key``'s sidecar may be, in the order they are tried."""
    stem = str(PurePosixPath(image_key).with_suffix(""))
    return [stem + suffix for suffix in SIDECAR_SUFFIXES]


def mask_key(image_key: str) -> str:
    """The key of ``image_key``'s mask (a step with ``mask: sidecar`` reads it)."""
    return str(PurePosixPath(image_key).with_suffix("")) + MASK_SUFFIX


def companion_keys(image_key: str) -> list[str]:
    """The sidecars and the mask ``image_key`` may have (``on_success: move`` takes them)."""
    return [*sidecar_keys(image_key), mask_key(image_key)]


def is_sidecar(key: str) -> bool:
    """Whether ``key`` is a sidecar or a mask (never an input of its own)."""
    lower = key.lower()
    return lower.endswith(SIDECAR_SUFFIXES) or lower.endswith(MASK_SUFFIX)


def image_keys(sidecar_key: str) -> list[str]:
    """The keys the image of a sidecar or mask may have, in the order they are tried."""
    if sidecar_key.lower().endswith(MASK_SUFFIX):
        base = sidecar_key[: -len(MASK_SUFFIX)]
    else:
        base = str(PurePosixPath(sidecar_key).with_suffix(""))
    return [base + ext for ext in IMAGE_EXTENSIONS]
