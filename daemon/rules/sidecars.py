"""Sidecars: per-file values next to an image (``photo.txt``, ``photo.json``, ``photo.yaml``)
and its mask (``photo.mask.png``) -- their names and how a sidecar file is parsed.

A sidecar is written by whoever can write the drop folder, so it is parsed as untrusted:
at most ``limits.max_sidecar_bytes`` bytes, YAML without anchors or aliases (a 400-byte alias
bomb expands to gigabytes) and without the position walk rule files get, at most
:data:`MAX_NODES` values nested at most :data:`MAX_DEPTH` deep, and prompts of at most
``limits.max_prompt_chars`` characters. Each cap exceeded is an InputError naming the file,
the cap and the setting that raises it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from daemon.config import yamlfile
from daemon.errors import InputError
from daemon.types import SidecarRef

# Values (mapping keys count too) and nesting levels a JSON/YAML sidecar may have. A sidecar
# holds a prompt, a few numbers and a flat ``vars`` mapping: these are far above any real one
# and far below what costs memory or time.
MAX_NODES = 2000
MAX_DEPTH = 8


@dataclass(frozen=True)
class SidecarLimits:
    """The caps a sidecar must fit (the ``limits`` section of the config)."""

    max_bytes: int = 64 * 1024  # limits.max_sidecar_bytes
    max_prompt_chars: int = 4000  # limits.max_prompt_chars
    max_nodes: int = MAX_NODES
    max_depth: int = MAX_DEPTH

    def check_size(self, key: str, size: int) -> None:
        """InputError when a sidecar of ``size`` bytes is over the cap (before reading it)."""
        if size > self.max_bytes:
            raise InputError(
                f"{key}: sidecar is {size} bytes, over the {self.max_bytes}-byte limit for"
                " sidecars; shorten it, or raise limits.max_sidecar_bytes in the config"
            )


DEFAULT_LIMITS = SidecarLimits()


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
    def parse(cls, key: str, data: bytes, limits: SidecarLimits = DEFAULT_LIMITS) -> Sidecar:
        """Parse a sidecar's bytes; a broken one raises InputError saying what is wrong --
        whatever the parser met (deep nesting, wrong types, a cap exceeded), never another
        exception."""
        try:
            limits.check_size(key, len(data))
            return cls._parse(key, data, limits)
        except InputError:
            raise
        except RecursionError:
            raise InputError(f"{key}: sidecar is nested too deeply to read") from None
        except Exception as exc:  # a parser's surprise is still the file's fault
            raise InputError(
                f"{key}: sidecar cannot be read ({type(exc).__name__}: {exc})"
            ) from None

    @classmethod
    def _parse(cls, key: str, data: bytes, limits: SidecarLimits) -> Sidecar:
        sha = hashlib.sha256(data).hexdigest()
        try:
            text = data.decode("utf-8-sig")  # a BOM from a Windows editor is not text
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{key}: sidecar is not UTF-8 text (byte {exc.start}); save it as UTF-8"
            ) from None
        if key.lower().endswith(".txt"):
            # Plain text, exactly as written: "Summer sale {50% off}" is not a template.
            _check_prompt(key, "text", text.strip(), limits)
            return cls(key, sha, prompt=text.strip(), text=text.strip())
        kind = "JSON" if key.lower().endswith(".json") else "YAML"
        values = _load_values(key, kind, text, limits)
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
            if value is not None:
                _check_prompt(key, label, value, limits)
        variables = values.get("vars") or {}
        if not isinstance(variables, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for k, v in variables.items()
        ):
            raise InputError(f"{key}: sidecar vars must be a mapping of names to text or numbers")
        for name, value in variables.items():
            if isinstance(value, str):  # a variable is rendered into the prompt
                _check_prompt(key, f"vars.{name}", value, limits)
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


def _load_values(key: str, kind: str, text: str, limits: SidecarLimits) -> Any:
    """A JSON/YAML sidecar's values, within the node and depth caps (no YAML aliases)."""
    try:
        if kind == "JSON":
            values = json.loads(text)
            _check_shape(values, limits)
            return values
        return yamlfile.safe_loads(text, max_nodes=limits.max_nodes, max_depth=limits.max_depth)
    except yamlfile.UntrustedYAMLError as exc:
        raise InputError(f"{key}: sidecar refused: {exc}") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError(f"{key}: sidecar is not valid {kind}: {exc}") from None


def _check_shape(values: Any, limits: SidecarLimits) -> None:
    """The node and depth caps for parsed JSON (YAML is checked while it is composed)."""
    nodes = 0
    pending: list[tuple[Any, int]] = [(values, 1)]
    while pending:
        value, level = pending.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise yamlfile.UntrustedYAMLError(f"more than {limits.max_nodes} values")
        if level > limits.max_depth:
            raise yamlfile.UntrustedYAMLError(f"nested deeper than {limits.max_depth} levels")
        if isinstance(value, dict):
            nodes += len(value)  # the keys
            pending += [(v, level + 1) for v in value.values()]
        elif isinstance(value, list):
            pending += [(v, level + 1) for v in value]


def _check_prompt(key: str, label: str, value: str, limits: SidecarLimits) -> None:
    if len(value) > limits.max_prompt_chars:
        raise InputError(
            f"{key}: sidecar {label} is {len(value)} characters, over the"
            f" {limits.max_prompt_chars}-character limit for prompts; shorten it, or raise"
            " limits.max_prompt_chars in the config"
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


def without_suffix(key: str) -> str:
    """``key`` without its last name's suffix (``a/b.c.png`` -> ``a/b.c``), as
    ``PurePosixPath.with_suffix("")`` has it (``.hidden`` and ``name.`` have none), but on
    the key as it is: an object key's ``//`` or ``./`` is part of its name, and intake asks
    for every arrival's sidecar names, so the string operation's speed counts."""
    folder, slash, name = key.rpartition("/")
    dot = name.rfind(".")
    return folder + slash + name[:dot] if 0 < dot < len(name) - 1 else key


def sidecar_keys(image_key: str) -> list[str]:
    """The keys where ``image_key``'s sidecar may be, in the order they are tried."""
    stem = without_suffix(image_key)
    return [stem + suffix for suffix in SIDECAR_SUFFIXES]


def mask_key(image_key: str) -> str:
    """The key of ``image_key``'s mask (a step with ``mask: sidecar`` reads it)."""
    return without_suffix(image_key) + MASK_SUFFIX


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
        base = without_suffix(sidecar_key)
    return [base + ext for ext in IMAGE_EXTENSIONS]
