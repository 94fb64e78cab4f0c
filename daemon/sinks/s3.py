"""An S3 sink: outputs are objects under ``s3://bucket/prefix``; the manifest commits.

- A PutObject is atomic (a reader sees the old object or the new one), so outputs need no
  temp-name-then-rename. Objects of ``multipart_threshold`` bytes or more (videos) go up as a
  multipart upload through boto3's transfer manager; S3 makes the object visible only when the
  upload completes, so that is atomic too.
- ``write_manifest`` is a conditional PutObject on the manifest it replaces: ``IfNoneMatch="*"``
  for a first round, ``IfMatch=<ETag>`` (read when the previous round was archived) for a new
  round of the same input. The first daemon to commit a round wins and every later one gets
  ``AlreadyCommitted`` (412 PreconditionFailed, or 409 ConditionalRequestConflict when two
  writes race), which the runner counts as success. ``write_if`` is the same
  compare-and-swap for any object (the root index).
- Variants, sheets and pages are plain PutObjects. With deterministic models two daemons write
  the same bytes and the last writer changes nothing; where output differs between machines
  (GPU kernels), a slower daemon can overwrite a variant *after* the winner's manifest listed
  its sha256. See docs/s3.md ("several daemons") for the trade-off and its remedy.
- Content types come from the caller or, when it passes none (or octet-stream), from the
  extension. ``metadata`` (rule, source sha256) is stored as ``x-amz-meta-darkroom-*``.
- Errors are translated at daemon.aws into OutputError naming the bucket and key.
"""

from __future__ import annotations

import builtins
import io
import mimetypes
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon import aws
from daemon.errors import AlreadyCommitted, OutputError, WriteConflict
from daemon.rules.templates import safe_relpath
from daemon.sinks.base import Sink

if TYPE_CHECKING:
    from daemon.config.settings import S3SinkConfig

__all__ = ["S3Sink", "content_type_for"]

_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".avif": "image/avif",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_GENERIC = ("", "application/octet-stream", "binary/octet-stream")
_MIN_PART = 8 * 1024 * 1024


def content_type_for(path: str) -> str:
    """The Content-Type for an output path, by extension (octet-stream when unknown)."""
    dot = path.rfind(".")
    ext = path[dot:].lower() if dot > path.rfind("/") else ""
    return _TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def _metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """User metadata as S3 stores it: ``darkroom-<name>`` keys, ASCII values."""
    out: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        key = str(name).lower().replace("_", "-")
        if not key.startswith("darkroom-"):
            key = f"darkroom-{key}"
        # S3 user metadata travels in HTTP headers: keep it printable ASCII.
        out[key] = str(value).encode("ascii", "backslashreplace").decode("ascii")
    return out


class S3Sink(Sink):
    """Outputs are objects under ``s3://bucket/prefix`` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = 8 * 1024 * 1024,
    ) -> None:
        self.name = name
        self.bucket = bucket
        self.prefix = _folder(prefix)
        self.endpoint_url = endpoint_url
        self.region = region
        self.multipart_threshold = int(multipart_threshold)
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Sink({self.name!r}, {self.location('')!r})"

    @classmethod
    def from_config(cls, name: str, config: S3SinkConfig) -> S3Sink:
        return cls(
            name,
            config.bucket,
            config.prefix,
            endpoint_url=config.endpoint_url,
            region=config.region,
            multipart_threshold=config.multipart_threshold,
        )

    @property
    def client(self) -> Any:
        """The S3 client, made on first use (so building the sink never needs credentials)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = aws.client(
                        "s3", endpoint_url=self.endpoint_url, region=self.region
                    )
        return self._client

    # -- Sink ---------------------------------------------------------------------

    def write(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Store ``data`` at ``path`` (multipart above the threshold); returns its s3:// URL."""
        key = self._key(path)
        where = self._where(key)
        ctype = content_type if content_type not in _GENERIC else content_type_for(path)
        extra: dict[str, Any] = {"ContentType": ctype}
        meta = _metadata(metadata)
        if meta:
            extra["Metadata"] = meta
        with aws.translated(where, action="write", error=OutputError):
            if len(data) >= self.multipart_threshold:
                from boto3.s3.transfer import TransferConfig

                config = TransferConfig(
                    multipart_threshold=self.multipart_threshold,
                    multipart_chunksize=max(_MIN_PART, self.multipart_threshold),
                    max_concurrency=4,
                )
                self.client.upload_fileobj(
                    io.BytesIO(data), self.bucket, key, ExtraArgs=extra, Config=config
                )
            else:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        return where

    def version_of(self, data: bytes) -> str | None:
        """None: an ETag is not always the bytes' MD5 (SSE-KMS, multipart uploads)."""
        return None

    def version(self, path: str) -> str | None:
        """The object's ETag, or None when there is none."""
        key = self._key(path)
        try:
            etag: str = self.client.head_object(Bucket=self.bucket, Key=key)["ETag"]
        except aws._botocore_errors() as exc:
            if aws.is_not_found(exc):
                return None
            raise aws.translate(
                exc, self._where(key), action="look up", error=OutputError
            ) from None
        return etag

    def write_if(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        replacing: str | None,
    ) -> str:
        """PutObject with IfMatch=``replacing`` (IfNoneMatch="*" when None); WriteConflict on
        412 PreconditionFailed or 409 ConditionalRequestConflict (two writes racing)."""
        key = self._key(path)
        where = self._where(key)
        condition = {"IfNoneMatch": "*"} if replacing is None else {"IfMatch": replacing}
        ctype = content_type if content_type not in _GENERIC else content_type_for(path)
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=ctype, **condition
            )
        except aws._botocore_errors() as exc:
            if (
                aws.is_precondition_failed(exc)
                or aws.error_code(exc) == "ConditionalRequestConflict"
                or (replacing is not None and aws.error_code(exc) == "NoSuchKey")  # deleted
            ):
                raise WriteConflict(
                    f"{where} changed while it was being updated"
                    f" (expected {replacing or 'no object'})"
                ) from None
            raise aws.translate(exc, where, action="write", error=OutputError) from None
        return where

    def write_manifest(self, path: str, data: bytes, *, replacing: str | None = None) -> str:
        """The commit marker, written only over the manifest it replaces (``replacing``, its
        ETag when the previous round was archived; None: only if absent). AlreadyCommitted
        when another daemon committed in between."""
        try:
            return self.write_if(path, data, "application/json", replacing=replacing)
        except WriteConflict:
            raise AlreadyCommitted(
                f"{self._where(self._key(path))} exists already or changed:"
                " another daemon committed this source"
            ) from None

    def read(self, path: str) -> bytes:
        key = self._key(path)
        with aws.translated(self._where(key), action="read", error=OutputError):
            data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def exists(self, path: str) -> bool:
        key = self._key(path)
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except aws._botocore_errors() as exc:
            if aws.is_not_found(exc):
                return False
            raise aws.translate(
                exc, self._where(key), action="look up", error=OutputError
            ) from None
        return True

    def location(self, path: str) -> str:
        return self._where(self.prefix + safe_relpath(path) if path else self.prefix)

    def delete(self, path: str) -> None:
        key = self._key(path)
        with aws.translated(self._where(key), action="delete", error=OutputError):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Paths (relative to the sink's prefix) under ``prefix``."""
        start = self.prefix + (safe_relpath(prefix) if prefix else "")
        paths: list[str] = []
        with aws.translated(self._where(start), action="list", error=OutputError):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            ):
                paths += [item["Key"][len(self.prefix) :] for item in page.get("Contents", [])]
        return sorted(paths)

    # -- helpers ---------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        try:
            return self.prefix + safe_relpath(path)
        except ValueError as exc:
            raise OutputError(f"{self._where(self.prefix)}: {exc}") from None

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def _folder(prefix: str) -> str:
    """A prefix is a folder: no leading '/', exactly one trailing '/' (or empty)."""
    prefix = (prefix or "").lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"
