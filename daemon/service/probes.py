"""Reachability checks of the configured sources and sinks, one function per kind of location.

    probes = build_probes(settings.sources, settings.sinks)   # {"source:cam": probe, ...}
    probes["source:cam"]()      # None when reachable; raises EnvironmentFault saying why

A check is cheap and read-only — it never writes into a user's folder or bucket:

- folder source: the folder exists and can be listed and read;
- folder sink: the folder (or the nearest folder above it, which the sink would create it
  in) can be written, and is not on a read-only mount;
- S3 source and sink: one ``ListObjectsV2`` of at most one key under the prefix (so
  ``s3:ListBucket`` on the prefix must be granted: docs/s3.md's policies do);
- S3 events source: also ``GetQueueAttributes`` on its queue.

S3 checks use their own clients with one attempt and short timeouts, so a dead endpoint is
reported within seconds rather than after botocore's retries. The checks are built from the
configuration (not from the running sources) so that they stay independent of how each
source works; :mod:`daemon.service.health` runs them and keeps the verdicts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from daemon import aws
from daemon.config.settings import (
    FolderSinkConfig,
    FolderSourceConfig,
    S3SinkConfig,
    S3SourceConfig,
)
from daemon.errors import EnvironmentFault

__all__ = ["Probe", "build_probes", "part_name"]

Probe = Callable[[], None]

# Seconds a check may wait for an S3/SQS endpoint: long enough for a slow store, short
# enough that a dead endpoint shows in status within one check interval.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0


def part_name(kind: str, name: str) -> str:
    """The name a source or sink goes by in status, /readyz and the logs: ``source:cam``."""
    return f"{kind}:{name}"


def _folder_source(config: FolderSourceConfig) -> Probe:
    root = Path(config.path)

    def probe() -> None:
        if not root.exists():
            raise EnvironmentFault(
                f"{root} does not exist; create it, or fix sources.*.path in the config"
            )
        if not root.is_dir():
            raise EnvironmentFault(f"{root} is not a folder; point the source at a folder")
        if not os.access(root, os.R_OK | os.X_OK):
            raise EnvironmentFault(
                f"{root} cannot be read by this user (uid {os.getuid()}); grant read access"
            )
        try:
            with os.scandir(root) as entries:
                next(entries, None)
        except OSError as exc:
            raise EnvironmentFault(f"cannot list {root}: {exc.strerror or exc}") from None

    return probe


def _folder_sink(config: FolderSinkConfig) -> Probe:
    root = Path(config.path)

    def probe() -> None:
        existing = root
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            raise EnvironmentFault(f"{existing} is not a folder; outputs cannot go under it")
        try:
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        except OSError as exc:
            raise EnvironmentFault(f"cannot reach {existing}: {exc.strerror or exc}") from None
        if read_only:
            raise EnvironmentFault(f"{existing} is on a read-only file system")
        if not os.access(existing, os.W_OK | os.X_OK):
            what = "" if existing == root else f" (to create {root})"
            raise EnvironmentFault(
                f"{existing} is not writable by this user (uid {os.getuid()}){what}; "
                "grant write access or choose another sinks.*.path"
            )

    return probe


class _S3Clients:
    """One short-timeout, one-attempt client per (service, endpoint, region), made lazily."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str | None, str | None], Any] = {}

    def get(self, service: str, endpoint_url: str | None, region: str | None) -> Any:
        key = (service, endpoint_url, region)
        if key not in self._clients:
            self._clients[key] = aws.client(
                service,
                endpoint_url=endpoint_url,
                region=region,
                max_pool_connections=2,
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                max_attempts=1,
            )
        return self._clients[key]


def _s3_prefix(
    clients: _S3Clients, bucket: str, prefix: str, endpoint: str | None, region: str | None
) -> Probe:
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    where = f"s3://{bucket}/{folder}"

    def probe() -> None:
        with aws.translated(where, action="list", error=EnvironmentFault):
            clients.get("s3", endpoint, region).list_objects_v2(
                Bucket=bucket, Prefix=folder, MaxKeys=1
            )

    return probe


def _sqs_queue(
    clients: _S3Clients, queue_url: str, endpoint: str | None, region: str | None
) -> Probe:
    def probe() -> None:
        from daemon.sources.s3.events import queue_region

        client = clients.get("sqs", endpoint, region or queue_region(queue_url))
        with aws.translated(queue_url, action="reach the queue", error=EnvironmentFault):
            client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])

    return probe


def _both(first: Probe, second: Probe) -> Probe:
    def probe() -> None:
        first()
        second()

    return probe


def build_probes(sources: Mapping[str, Any], sinks: Mapping[str, Any]) -> dict[str, Probe]:
    """A check per configured source and sink, by :func:`part_name`. Kinds without a check
    (none today) are left out: they are shown as not checked."""
    clients = _S3Clients()
    probes: dict[str, Probe] = {}
    for name, config in sources.items():
        if isinstance(config, FolderSourceConfig):
            probes[part_name("source", name)] = _folder_source(config)
        elif isinstance(config, S3SourceConfig):
            probe = _s3_prefix(
                clients, config.bucket, config.prefix, config.endpoint_url, config.region
            )
            if config.mode == "events" and config.queue_url:
                queue = _sqs_queue(clients, config.queue_url, config.endpoint_url, config.region)
                probe = _both(queue, probe)
            probes[part_name("source", name)] = probe
    for name, config in sinks.items():
        if isinstance(config, FolderSinkConfig):
            probes[part_name("sink", name)] = _folder_sink(config)
        elif isinstance(config, S3SinkConfig):
            probes[part_name("sink", name)] = _s3_prefix(
                clients, config.bucket, config.prefix, config.endpoint_url, config.region
            )
    return probes
