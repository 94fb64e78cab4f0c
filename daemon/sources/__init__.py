"""Sources: where arrivals come from; ``SOURCES`` registers each type by its config ``type``.

The contract is :class:`daemon.sources.base.Source`. Built-ins: ``folder`` (a watched folder),
``s3`` (a bucket prefix, polled or fed by S3 event notifications through SQS) and ``memory``
(for tests). ``daemon.sources.files`` is the CLI's one-shot source and is not configurable.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast

from daemon.sources.base import Emit, Known, PeriodicTask, Source

if TYPE_CHECKING:
    from daemon.config.settings import SourceConfig

__all__ = ["SOURCES", "Emit", "Known", "PeriodicTask", "Source", "build_source", "source_class"]

SOURCES: dict[str, str] = {
    "folder": "daemon.sources.folder:FolderSource",
    "s3": "daemon.sources.s3:S3Source",
    "memory": "daemon.sources.memory:MemorySource",
}


def source_class(kind: str) -> type[Source]:
    """The class registered for ``kind``, imported on demand (boto3 only when S3 is used)."""
    module_name, _, attr = SOURCES[kind].partition(":")
    return cast("type[Source]", getattr(importlib.import_module(module_name), attr))


def build_source(name: str, config: SourceConfig) -> Source:
    """A source from its config model (daemon.config.settings): ``Class.from_config``."""
    cls: Any = source_class(config.type)
    return cast(Source, cls.from_config(name, config))
