"""The manifest file's bytes: JSON with the keys in the order the daemon has always written them.

A model's key is written only when it was set (read from the file, or set by the builder), and
unknown keys are written back (see :mod:`daemon.outputs.manifest` on tolerance).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from daemon.types import OutputRecord

if TYPE_CHECKING:
    from daemon.outputs.manifest import Manifest

__all__ = ["manifest_bytes", "to_json_data"]


def manifest_bytes(manifest: Manifest) -> bytes:
    """The file's bytes: ``json.dumps(..., indent=2)`` with the keys in the order the daemon
    has always written them."""
    return json.dumps(to_json_data(manifest), indent=2).encode()


def to_json_data(manifest: Manifest) -> dict[str, Any]:
    """The manifest as plain JSON data (what :func:`manifest_bytes` writes)."""
    return _plain(manifest)


# The order the runner writes an output's keys in; keys set to None that a runner only writes
# when they have a value are left out, as it always did.
_OUTPUT_ORDER: tuple[str, ...] = (
    "path", "step", "model", "model_id", "variant", "seed", "input", "seconds", "params",
    "cost", "provider", "request_id", "seed_honoured", "error", "width", "height",
    "kind", "poster", "frames", "fps", "duration", "sha256",
)  # fmt: skip
_OUTPUT_ONLY_WHEN_SET = frozenset(_OUTPUT_ORDER[9:])
# A field added to OutputRecord later is written after these, when set.
_OUTPUT_ORDER += tuple(f for f in OutputRecord.model_fields if f not in _OUTPUT_ORDER)


def _plain(model: BaseModel) -> dict[str, Any]:
    if isinstance(model, OutputRecord):
        return _plain_output(model)
    fields_set = model.model_fields_set
    data = {
        name: _value(getattr(model, name))
        for name in type(model).model_fields
        if name in fields_set
    }
    data.update((k, _value(v)) for k, v in (model.model_extra or {}).items())
    return data


def _plain_output(output: OutputRecord) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in _OUTPUT_ORDER:
        value = getattr(output, name)
        if name == "kind":
            if value != "image":  # an image is the default; only videos say what they are
                data[name] = value
        elif name in _OUTPUT_ONLY_WHEN_SET:
            if value is not None:
                data[name] = _value(value)
        elif name in output.model_fields_set:
            data[name] = _value(value)
    data.update((k, _value(v)) for k, v in (output.model_extra or {}).items())
    return data


def _value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _plain(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    return value
