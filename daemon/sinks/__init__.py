"""Sinks: where outputs are committed; ``SINKS`` registers each type by its config ``type``.

The contract is :class:`daemon.sinks.base.Sink`. Built-ins: ``folder`` (temp file + fsync +
rename), ``s3`` (PutObject; the manifest with IfNoneMatch) and ``memory`` (for tests).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast

from daemon.sinks.base import Sink

if TYPE_CHECKING:
    from daemon.config.settings import SinkConfig

__all__ = ["SINKS", "Sink", "build_sink", "sink_class"]

SINKS: dict[str, str] = {
    "folder": "daemon.sinks.folder:FolderSink",
    "s3": "daemon.sinks.s3:S3Sink",
    "memory": "daemon.sinks.memory:MemorySink",
}


def sink_class(kind: str) -> type[Sink]:
    """The class registered for ``kind``, imported on demand (boto3 only when S3 is used)."""
    module_name, _, attr = SINKS[kind].partition(":")
    return cast("type[Sink]", getattr(importlib.import_module(module_name), attr))


def build_sink(name: str, config: SinkConfig) -> Sink:
    """A sink from its config model (daemon.config.settings): ``Class.from_config``."""
    cls: Any = sink_class(config.type)
    return cast(Sink, cls.from_config(name, config))
