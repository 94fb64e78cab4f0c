"""A moto server on loopback for the whole session, and helpers to drive S3 sources.

Only 127.0.0.1 is ever targeted: the server binds a free loopback port, every client gets
``endpoint_url``, credentials are fake environment variables (inherited by daemon
subprocesses), and the instance-metadata lookup is switched off.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests import waiting

_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_DROP_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto server (S3 + SQS) running for the session."""
    pytest.importorskip("moto.server", reason="needs moto[server]: pip install 'moto[server]>=5'")
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in (*_FAKE_ENV, *_DROP_ENV)}
    os.environ.update(_FAKE_ENV)
    for key in _DROP_ENV:
        os.environ.pop(key, None)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def s3(moto_endpoint: str) -> Any:
    from daemon import aws

    return aws.client("s3", endpoint_url=moto_endpoint, region="us-east-1")


@pytest.fixture(scope="session")
def sqs(moto_endpoint: str) -> Any:
    from daemon import aws

    return aws.client("sqs", endpoint_url=moto_endpoint, region="us-east-1")


_names = itertools.count()


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"dr-{uuid.uuid4().hex[:12]}-{next(_names)}"
    s3.create_bucket(Bucket=name)
    return name


def make_queue(sqs: Any, *, visibility: int = 30, dlq_after: int | None = None) -> str:
    name = f"q-{uuid.uuid4().hex[:12]}"
    attributes = {"VisibilityTimeout": str(visibility)}
    if dlq_after:
        dlq = sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": arn, "maxReceiveCount": str(dlq_after)}
        )
    return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def notify(s3: Any, sqs: Any, bucket: str, queue_url: str, prefix: str = "") -> None:
    """Configure bucket -> queue notifications for ObjectCreated:* (moto sends s3:TestEvent)."""
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    config: dict[str, Any] = {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}
    if prefix:
        config["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [config]}
    )


@pytest.fixture
def queue(s3: Any, sqs: Any, bucket: str) -> str:
    """A queue receiving ``bucket``'s ObjectCreated notifications."""
    url = make_queue(sqs)
    notify(s3, sqs, bucket, url)
    return url


def queue_depth(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "a condition"
) -> object:
    return waiting.wait_for(predicate, timeout, what)


@dataclass
class Collector:
    """``emit`` collecting arrivals and a ``known()`` backed by a set of (key, etag)."""

    arrivals: list = field(default_factory=list)
    handled: set = field(default_factory=set)
    known_calls: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, arrival: Any) -> None:
        with self.lock:
            self.arrivals.append(arrival)

    def known(self, key: str, size: int, mtime_ns: int, etag: str | None = None) -> bool:
        with self.lock:
            self.known_calls.append((key, etag))
            return (key, etag) in self.handled

    def mark(self, arrival: Any) -> None:
        with self.lock:
            self.handled.add((arrival.key, arrival.etag))

    def keys(self) -> list[str]:
        with self.lock:
            return [a.key for a in self.arrivals]


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def make_source(moto_endpoint: str) -> Iterator[Callable[..., Any]]:
    """Build S3Sources against the moto server; every one started is stopped afterwards."""
    from daemon.sources.s3 import S3Source

    made: list[Any] = []

    def make(bucket: str, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", moto_endpoint)
        kwargs.setdefault("region", "us-east-1")
        if kwargs.get("mode") == "events":
            kwargs.setdefault("wait_time", 1)
            kwargs.setdefault("visibility_timeout", 30)
        source = S3Source(kwargs.pop("name", "bucket"), bucket, kwargs.pop("prefix", ""), **kwargs)
        made.append(source)
        return source

    yield make
    for source in made:
        source.stop()
