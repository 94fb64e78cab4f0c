"""S3 sink against a moto server: content types, metadata, multipart, conditional manifest."""

from __future__ import annotations

import json
import os

import pytest

from daemon import aws
from daemon.config.settings import S3SinkConfig
from daemon.errors import AlreadyCommitted, EnvironmentFault, InputError, OutputError
from daemon.sinks import build_sink
from daemon.sinks.s3 import S3Sink, content_type_for


@pytest.fixture
def sink(moto_endpoint, bucket):
    return S3Sink(
        "review",
        bucket,
        "out",
        endpoint_url=moto_endpoint,
        region="us-east-1",
        multipart_threshold=5 * 1024 * 1024,
    )


def test_build_sink_from_config(moto_endpoint):
    sink = build_sink(
        "r", S3SinkConfig(type="s3", bucket="outputs", prefix="/runs/", endpoint_url=moto_endpoint)
    )
    assert (sink.name, sink.bucket, sink.prefix, sink.multipart_threshold) == (
        "r",
        "outputs",
        "runs/",
        8 << 20,
    )
    assert sink.location("a/b.png") == "s3://outputs/runs/a/b.png"


def test_content_types_metadata_and_read_back(s3, bucket, sink):
    url = sink.write(
        "rule/cat/explore-0.png",
        b"png bytes",
        "image/png",
        metadata={"rule": "explore", "source_sha256": "ab" * 32},
    )
    assert url == f"s3://{bucket}/out/rule/cat/explore-0.png"
    head = s3.head_object(Bucket=bucket, Key="out/rule/cat/explore-0.png")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"darkroom-rule": "explore", "darkroom-source-sha256": "ab" * 32}
    for path, expected in [
        ("a.jpg", "image/jpeg"),
        ("a.WEBP", "image/webp"),
        ("v.mp4", "video/mp4"),
        ("index.html", "text/html; charset=utf-8"),
        ("m.json", "application/json"),
        ("blob", "application/octet-stream"),
    ]:
        sink.write(path, b"x")  # no content type given: by extension
        assert s3.head_object(Bucket=bucket, Key=f"out/{path}")["ContentType"] == expected
        assert content_type_for(path) == expected
    assert sink.read("rule/cat/explore-0.png") == b"png bytes"
    assert sink.exists("a.jpg") and not sink.exists("nope.jpg")
    with pytest.raises(OutputError, match=f"s3://{bucket}/out/nope.jpg"):
        sink.read("nope.jpg")


def test_unsafe_paths_are_refused(sink):
    for bad in ("../escape.png", "/abs.png", "a/\x00.png"):
        with pytest.raises(OutputError):
            sink.write(bad, b"x", "image/png")


def test_large_objects_go_up_in_parts(s3, bucket, sink):
    data = os.urandom(9 * 1024 * 1024)  # above the 5 MiB threshold: 8 MiB + 1 MiB parts
    sink.write("videos/clip.mp4", data, "video/mp4", metadata={"rule": "animate"})
    head = s3.head_object(Bucket=bucket, Key="out/videos/clip.mp4")
    assert head["ETag"].strip('"').endswith("-2")  # a multipart ETag: md5-of-parts "-" count
    assert head["ContentType"] == "video/mp4" and head["Metadata"] == {"darkroom-rule": "animate"}
    assert s3.get_object(Bucket=bucket, Key="out/videos/clip.mp4")["Body"].read() == data
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # completed, none left over
    small = s3.head_object(Bucket=bucket, Key="out/videos/clip.mp4", PartNumber=1)
    assert small["PartsCount"] == 2


def test_manifest_is_written_once(s3, bucket, sink):
    first = json.dumps({"by": "daemon-a"}).encode()
    assert (
        sink.write_manifest("rule/cat/manifest.json", first)
        == f"s3://{bucket}/out/rule/cat/manifest.json"
    )
    with pytest.raises(AlreadyCommitted, match="another daemon") as info:
        sink.write_manifest("rule/cat/manifest.json", b'{"by": "daemon-b"}')
    assert isinstance(info.value, OutputError) and not info.value.retryable
    assert sink.read("rule/cat/manifest.json") == first
    assert (
        s3.head_object(Bucket=bucket, Key="out/rule/cat/manifest.json")["ContentType"]
        == "application/json"
    )


def test_write_errors_name_the_bucket_and_key(moto_endpoint):
    # A missing bucket is the environment's fault, not the input's: the job is held.
    sink = S3Sink("x", "no-such-bucket-for-sink", endpoint_url=moto_endpoint, region="us-east-1")
    with pytest.raises(
        EnvironmentFault, match="s3://no-such-bucket-for-sink/a.png.*no such bucket"
    ):
        sink.write("a.png", b"x", "image/png")
    with pytest.raises(EnvironmentFault, match="s3://no-such-bucket-for-sink/m.json"):
        sink.write_manifest("m.json", b"{}")


def test_translate_classifies_errors():
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    def client_error(code, status):
        return ClientError(
            {
                "Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "GetObject",
        )

    where = "s3://b/k.jpg"
    denied = aws.translate(client_error("AccessDenied", 403), where, action="read")
    assert (
        isinstance(denied, InputError) and "access denied" in str(denied) and not denied.retryable
    )
    slow = aws.translate(client_error("SlowDown", 503), where, action="read")
    assert slow.retryable and where in str(slow)
    down = aws.translate(
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), where, error=OutputError
    )
    assert isinstance(down, EnvironmentFault)  # an unreachable sink holds the job
    creds = aws.translate(NoCredentialsError(), where, action="list")
    assert "no AWS credentials" in str(creds) and "AWS_SECRET_ACCESS_KEY=" not in str(creds)
    changed = aws.translate(client_error("PreconditionFailed", 412), where)
    assert "changed" in str(changed) and not changed.retryable


def test_delete_and_list_for_review_indexes(sink):
    sink.write("r/a/one-0.png", b"x", "image/png")
    sink.write("r/a/manifest.json", b"{}", "application/json")
    sink.write("r/b/manifest.json", b"{}", "application/json")
    assert sink.list("") == ["r/a/manifest.json", "r/a/one-0.png", "r/b/manifest.json"]
    assert sink.list("r/a") == ["r/a/manifest.json", "r/a/one-0.png"]
    sink.delete("r/a/one-0.png")
    sink.delete("r/a/missing.png")  # missing is not an error
    assert not sink.exists("r/a/one-0.png")
