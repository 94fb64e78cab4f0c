"""S3 source, poll mode, against a moto server: listing, ETags, globs, reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daemon.config.settings import S3SourceConfig
from daemon.errors import InputError
from daemon.sources import PeriodicTask, build_source
from daemon.sources.s3 import S3Source, common, events
from tests.s3.conftest import wait_for


def test_importing_the_s3_modules_does_not_import_boto3():
    code = (
        "import sys, daemon.sources.s3, daemon.sinks.s3, daemon.aws;"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_source_from_config(moto_endpoint):
    config = S3SourceConfig(
        type="s3",
        bucket="photos",
        prefix="in",
        endpoint_url=moto_endpoint,
        include=["*.jpg"],
        poll_interval=7,
    )
    source = build_source("cam", config)
    assert (source.name, source.bucket, source.prefix, source.mode) == (
        "cam",
        "photos",
        "in/",
        "poll",
    )
    assert source.periodic() == [PeriodicTask(source.scan, 7.0, "s3-poll:cam")]
    reconciling = build_source(
        "ev",
        S3SourceConfig(
            type="s3",
            bucket="photos",
            mode="events",
            queue_url="http://127.0.0.1:1/q",
            reconcile_interval=99,
        ),
    )
    assert [(t.interval_s, t.name) for t in reconciling.periodic()] == [(99.0, "s3-reconcile:ev")]
    with pytest.raises(ValueError, match="queue_url"):
        S3Source("x", "photos", mode="events")


def test_poll_emits_each_version_once_with_globs(s3, bucket, make_source, collector):
    for key in (
        "in/a.jpg",
        "in/sub/b.JPG",
        "in/skip.txt",
        "in/raw/c.jpg",
        "in/folder/",
        "other/d.jpg",
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    source = make_source(bucket, prefix="in", include=["**/*.jpg"], exclude=["raw/"])
    source.start(collector.emit, collector.known)  # the startup listing runs on a thread
    wait_for(lambda: len(collector.arrivals) == 2, what="the startup listing")
    source.scan()
    source.scan()
    arrivals = sorted(collector.arrivals, key=lambda a: a.key)
    assert [a.key for a in arrivals] == ["a.jpg", "sub/b.JPG"]
    etag = s3.head_object(Bucket=bucket, Key="in/a.jpg")["ETag"].strip('"')
    first = arrivals[0]
    assert (first.source, first.uri, first.size, first.etag) == (
        "bucket",
        f"s3://{bucket}/in/a.jpg",
        8,
        etag,
    )
    assert first.mtime_ns > 1_600_000_000 * 10**9
    assert ("a.jpg", etag) in collector.known_calls  # asked with the unquoted ETag

    # Settled: later listings skip it without asking known() again.
    source.settle(first, "done")
    collector.known_calls.clear()
    source.scan()
    assert ("a.jpg", etag) not in collector.known_calls

    # An overwrite is a new version: emitted once more.
    s3.put_object(Bucket=bucket, Key="in/a.jpg", Body=b"new content")
    source.scan()
    source.scan()
    assert collector.keys().count("a.jpg") == 2
    assert collector.arrivals[-1].etag != etag


def test_poll_asks_known_and_skips_handled_versions(s3, bucket, make_source, collector):
    s3.put_object(Bucket=bucket, Key="x.png", Body=b"x")
    etag = s3.head_object(Bucket=bucket, Key="x.png")["ETag"].strip('"')
    collector.handled.add(("x.png", etag))
    source = make_source(bucket)
    source.start(collector.emit, collector.known)
    wait_for(lambda: collector.known_calls, what="the startup listing")
    source.scan()
    assert collector.arrivals == []


def test_poll_paginates(s3, bucket, make_source, collector, monkeypatch):
    monkeypatch.setattr(common, "PAGE_SIZE", 3)
    for i in range(10):
        s3.put_object(Bucket=bucket, Key=f"p/{i:02}.jpg", Body=b"%d" % i)
    source = make_source(bucket, prefix="p/")
    source.start(collector.emit, collector.known)  # the startup listing
    wait_for(lambda: len(collector.keys()) == 10, what="the startup listing")
    assert sorted(collector.keys()) == [f"{i:02}.jpg" for i in range(10)]


def test_read_checks_the_version(s3, bucket, make_source, collector):
    s3.put_object(Bucket=bucket, Key="in/a b.jpg", Body=b"one")
    source = make_source(bucket, prefix="in/")
    etag = s3.head_object(Bucket=bucket, Key="in/a b.jpg")["ETag"]
    assert source.read("a b.jpg") == b"one"
    assert source.read("a b.jpg", etag) == b"one"
    assert source.read("a b.jpg", etag.strip('"')) == b"one"
    s3.put_object(Bucket=bucket, Key="in/a b.jpg", Body=b"two")
    with pytest.raises(InputError, match="changed") as info:
        source.read("a b.jpg", etag)
    assert f"s3://{bucket}/in/a b.jpg" in str(info.value) and not info.value.retryable
    with pytest.raises(InputError, match=f"s3://{bucket}/in/gone.jpg.*no such object"):
        source.read("gone.jpg")


def test_listing_errors_are_logged_not_raised(make_source, collector):
    source = make_source("no-such-bucket-here")
    source.start(collector.emit, collector.known)
    source.scan()  # NoSuchBucket: a warning, the next listing tries again
    assert collector.arrivals == []


def test_region_comes_from_the_queue_url():
    assert events.queue_region("https://sqs.eu-west-1.amazonaws.com/123456789012/q") == "eu-west-1"
    assert events.queue_region("http://127.0.0.1:5000/123456789012/q") is None
    assert events.queue_region(None) is None
