"""S3 source, event mode: real S3 -> SQS notifications on a moto server.

moto delivers every notification exactly once and in order; duplicates and reordering are
injected around the source's ``receive_message`` call.
"""

from __future__ import annotations

import json
import threading
import time
import unicodedata

import pytest

from daemon.errors import InputError
from daemon.sources.s3 import parse_message
from tests.s3.conftest import make_queue, notify, queue_depth, wait_for


def _etag(s3, bucket, key):
    return s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def _settle_all(source, collector, outcome="done"):
    for arrival in list(collector.arrivals):
        collector.mark(arrival)
        source.settle(arrival, outcome)


def test_events_end_to_end_test_event_and_settle(s3, sqs, bucket, queue, make_source, collector):
    source = make_source(bucket, mode="events", queue_url=queue, prefix="in/", include=["*.jpg"])
    source.start(collector.emit, collector.known)
    # The s3:TestEvent sent when notifications were configured is deleted, nothing emitted.
    wait_for(lambda: queue_depth(sqs, queue) == (0, 0), what="the TestEvent to be deleted")
    assert collector.arrivals == []

    s3.put_object(Bucket=bucket, Key="in/a.jpg", Body=b"a")
    s3.put_object(Bucket=bucket, Key="in/b.jpg", Body=b"bb")
    s3.put_object(Bucket=bucket, Key="in/notes.txt", Body=b"n")  # not selected: deleted at once
    s3.put_object(Bucket=bucket, Key="elsewhere/c.jpg", Body=b"c")  # outside the prefix
    wait_for(lambda: len(collector.arrivals) == 2, what="two arrivals")
    a, b = sorted(collector.arrivals, key=lambda x: x.key)
    assert (a.key, a.size, a.etag, a.uri) == (
        "a.jpg",
        1,
        _etag(s3, bucket, "in/a.jpg"),
        f"s3://{bucket}/in/a.jpg",
    )
    assert b.key == "b.jpg" and b.size == 2
    assert source.read(a.key, a.etag) == b"a"

    # Held, not deleted, until settled.
    wait_for(lambda: queue_depth(sqs, queue) == (0, 2), what="only the two unsettled messages held")
    source.settle(a, "done")
    wait_for(lambda: queue_depth(sqs, queue) == (0, 1), what="a's message deleted")
    source.settle(b, "ignored")
    wait_for(lambda: queue_depth(sqs, queue) == (0, 0), what="b's message deleted")
    source.settle(b, "done")  # settling twice is harmless


@pytest.mark.parametrize("visibility", [30])
def test_awkward_keys_round_trip(s3, sqs, bucket, make_source, collector, visibility):
    queue = make_queue(sqs, visibility=visibility)
    notify(s3, sqs, bucket, queue)
    name = "café ü.jpg"
    keys = [
        "in/a b.jpg",
        "in/a+b.jpg",
        "in/100% real.jpg",
        "in/%2F literally.jpg",
        "in/plus+and space +.jpg",
        "in/" + unicodedata.normalize("NFC", name),
        "in/" + unicodedata.normalize("NFD", name),
        "in/日本語/写真.jpg",
        "in/" + "/".join(["deep"] * 40) + "/" + "x" * 700 + ".jpg",
    ]
    assert len(keys[-1].encode()) <= 1024 and len(set(keys)) == len(keys)
    for i, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=f"body {i}".encode())
    source = make_source(bucket, mode="events", queue_url=queue, prefix="in")
    source.start(collector.emit, collector.known)
    wait_for(lambda: len(collector.arrivals) == len(keys), what="every key")
    by_key = {a.key: a for a in collector.arrivals}
    assert sorted(by_key) == sorted(k[3:] for k in keys)  # exact bytes: NFC and NFD stay two keys
    for i, key in enumerate(keys):
        arrival = by_key[key[3:]]
        assert source.read(arrival.key, arrival.etag) == f"body {i}".encode()
    _settle_all(source, collector)
    wait_for(lambda: queue_depth(sqs, queue) == (0, 0), what="every message deleted")


class _Chaos:
    """Wraps ``receive_message``: every message comes twice, batches reversed, and copies of
    earlier messages come back later (as a redelivery after a lost delete would)."""

    def __init__(self, client):
        self.client, self.real = client, client.receive_message
        self.replay: list[dict] = []
        self.calls = 0

    def __call__(self, **kwargs):
        self.calls += 1
        response = self.real(**kwargs)
        messages = response.get("Messages", [])
        batch = [dict(m) for m in messages] + [dict(m) for m in messages]
        if self.replay and self.calls % 3 == 0:
            batch += self.replay[:5]
            self.replay = self.replay[5:]
        self.replay += [dict(m) for m in messages]
        batch.reverse()
        return {**response, "Messages": batch} if batch else response


def test_duplicated_and_reordered_deliveries_are_deduped(
    s3, sqs, bucket, queue, make_source, collector
):
    source = make_source(bucket, mode="events", queue_url=queue)
    chaos = _Chaos(source.mode_runner.sqs)
    source.mode_runner.sqs.receive_message = chaos  # the source's own client, wrapped
    settled: list = []

    def settle_soon(arrival):  # settle like the app does: after the work, from another thread
        collector.emit(arrival)

        def later():
            time.sleep(0.05)
            collector.mark(arrival)
            settled.append(arrival)
            source.settle(arrival, "done")

        threading.Thread(target=later).start()

    source.start(settle_soon, collector.known)
    keys = [f"k{i}.jpg" for i in range(12)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    wait_for(lambda: len(settled) == len(keys), what="every key settled")
    wait_for(
        lambda: not chaos.replay and queue_depth(sqs, queue) == (0, 0),
        timeout=20,
        what="the replays consumed and every message deleted",
    )
    # One more whole receive after that (the receiver handles a batch before it asks again):
    # whatever it could still deliver has been emitted by then.
    calls = chaos.calls
    wait_for(lambda: chaos.calls >= calls + 2, what="another receive from the queue")
    assert sorted(collector.keys()) == sorted(keys)  # once each despite 3+ deliveries


def test_reordered_versions_old_event_is_changed(s3, sqs, bucket, queue, make_source, collector):
    """v1 and v2 of one key announced newest first: v2 is processed, v1 reads as 'changed'
    and its message is deleted (superseded), not dead-lettered."""
    source = make_source(bucket, mode="events", queue_url=queue)
    real = source.mode_runner.sqs.receive_message
    held: list[dict] = []

    def newest_first(**kwargs):
        response = real(**kwargs)
        for m in response.get("Messages", []):
            if "TestEvent" not in m["Body"]:
                held.append(m)
        if len(held) < 2:
            return {
                **response,
                "Messages": [m for m in response.get("Messages", []) if "TestEvent" in m["Body"]],
            }
        batch, held[:] = list(reversed(held)), []
        return {**response, "Messages": batch}

    source.mode_runner.sqs.receive_message = newest_first
    source.start(collector.emit, collector.known)
    s3.put_object(Bucket=bucket, Key="k.jpg", Body=b"version one")
    v1 = _etag(s3, bucket, "k.jpg")
    s3.put_object(Bucket=bucket, Key="k.jpg", Body=b"version two")
    v2 = _etag(s3, bucket, "k.jpg")
    wait_for(lambda: len(collector.arrivals) == 2, what="both versions")
    assert [a.etag for a in collector.arrivals] == [v2, v1]
    new, old = collector.arrivals
    assert source.read(new.key, new.etag) == b"version two"
    with pytest.raises(InputError, match="changed"):
        source.read(old.key, old.etag)
    wait_for(lambda: queue_depth(sqs, queue) == (0, 1), what="the superseded message deleted")
    source.settle(new, "done")
    wait_for(lambda: queue_depth(sqs, queue) == (0, 0), what="all deleted")


def test_visibility_is_extended_while_unsettled(s3, sqs, bucket, make_source, collector):
    queue = make_queue(sqs, visibility=3)
    notify(s3, sqs, bucket, queue)
    source = make_source(bucket, mode="events", queue_url=queue, visibility_timeout=3)
    real, receipts = source.mode_runner.sqs.receive_message, []

    def counting(**kwargs):  # every receipt the source itself gets, redeliveries included
        response = real(**kwargs)
        receipts.extend(
            m["MessageId"] for m in response.get("Messages", []) if "TestEvent" not in m["Body"]
        )
        return response

    source.mode_runner.sqs.receive_message = counting
    source.start(collector.emit, collector.known)
    s3.put_object(Bucket=bucket, Key="slow.jpg", Body=b"s")
    wait_for(lambda: collector.arrivals, what="the arrival")
    deadline = time.monotonic() + 8  # well past the 3 s visibility timeout
    while time.monotonic() < deadline:
        stolen = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1, MaxNumberOfMessages=10)
        assert not stolen.get("Messages"), "a held message became visible to a second consumer"
    assert len(collector.arrivals) == 1
    assert len(receipts) == 1, "the held message was redelivered"
    source.settle(collector.arrivals[0], "done")
    wait_for(lambda: queue_depth(sqs, queue) == (0, 0), what="the message deleted")


def test_a_message_with_several_records_settles_when_all_did(
    s3, sqs, bucket, make_source, collector
):
    queue = make_queue(sqs)  # no bucket notification: we send a hand-made two-record event
    s3.put_object(Bucket=bucket, Key="in/one.jpg", Body=b"1")
    s3.put_object(Bucket=bucket, Key="in/two.jpg", Body=b"22")

    def record(key, name="ObjectCreated:Put"):
        return {
            "eventSource": "aws:s3",
            "eventName": name,
            "eventTime": "2026-01-02T03:04:05.678Z",
            "s3": {
                "bucket": {"name": bucket},
                "object": {
                    "key": key.replace("/", "%2F"),
                    "size": 1,
                    "eTag": _etag(s3, bucket, key),
                },
            },
        }

    body = {
        "Records": [
            record("in/one.jpg"),
            record("in/two.jpg"),
            {**record("in/one.jpg"), "eventName": "ObjectRemoved:Delete"},
        ]
    }
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body))
    source = make_source(bucket, mode="events", queue_url=queue, prefix="in/")
    source.start(collector.emit, collector.known)
    wait_for(lambda: len(collector.arrivals) == 2, what="two arrivals from one message")
    one, two = sorted(collector.arrivals, key=lambda a: a.key)
    source.settle(one, "done")  # decides, and deletes what it can, before it returns
    assert queue_depth(sqs, queue) == (0, 1)
    source.settle(two, "failed")
    wait_for(lambda: queue_depth(sqs, queue) == (0, 0), what="the message deleted")


def test_known_records_and_unknown_bodies(s3, sqs, bucket, queue, make_source, collector):
    s3.put_object(Bucket=bucket, Key="done.jpg", Body=b"d")
    collector.handled.add(("done.jpg", _etag(s3, bucket, "done.jpg")))
    sqs.send_message(QueueUrl=queue, MessageBody="not an S3 event")
    source = make_source(bucket, mode="events", queue_url=queue)
    source.start(collector.emit, collector.known)
    # The known record's message is deleted as a duplicate; the foreign one is left alone
    # (held until its visibility lapses, then for the queue's redrive policy).
    wait_for(lambda: queue_depth(sqs, queue) == (0, 1), what="the duplicate deleted")
    assert collector.arrivals == []


def test_events_of_another_bucket_are_never_acknowledged(s3, sqs, bucket, make_source, collector):
    # Issue 14: a source naming the wrong bucket must not delete the queue's messages
    # silently; they stay for the redrive policy (and the daemon says why).
    queue = make_queue(sqs)
    other = f"{bucket}-other"
    s3.create_bucket(Bucket=other)
    notify(s3, sqs, other, queue)
    source = make_source(bucket, mode="events", queue_url=queue)
    source.start(collector.emit, collector.known)
    s3.put_object(Bucket=other, Key="photo.jpg", Body=b"p")
    wait_for(lambda: queue_depth(sqs, queue) == (0, 1), what="the message received and held")
    # Received (in flight) comes just before handled: wait for the handling too.
    wait_for(lambda: source.mode_runner._foreign_buckets == {other}, what="the bucket named")
    assert collector.arrivals == []
    source.stop()
    assert sum(queue_depth(sqs, queue)) == 1  # still there: not acknowledged


def test_unreadable_object_is_released_for_redelivery(s3, sqs, bucket, make_source, collector):
    queue = make_queue(sqs, visibility=3)
    notify(s3, sqs, bucket, queue)
    source = make_source(bucket, mode="events", queue_url=queue, visibility_timeout=3)
    source.start(collector.emit, collector.known)
    s3.put_object(Bucket=bucket, Key="gone.jpg", Body=b"g")
    wait_for(lambda: collector.arrivals, what="the arrival")
    s3.delete_object(Bucket=bucket, Key="gone.jpg")
    arrival = collector.arrivals[0]
    with pytest.raises(InputError, match="no such object"):
        source.read(arrival.key, arrival.etag)
    # No longer extended: SQS redelivers it, and it is emitted again (then, after
    # maxReceiveCount, the queue's redrive policy takes it to the DLQ).
    wait_for(lambda: len(collector.arrivals) == 2, timeout=15, what="the redelivery")


def test_stop_is_prompt_and_releases_held_messages(s3, sqs, bucket, queue, make_source, collector):
    source = make_source(
        bucket, mode="events", queue_url=queue, wait_time=20, visibility_timeout=60
    )
    source.start(collector.emit, collector.known)
    s3.put_object(Bucket=bucket, Key="held.jpg", Body=b"h")
    wait_for(lambda: collector.arrivals, what="the arrival")
    started = time.monotonic()
    source.stop()
    # Not the 20 s long poll: the receive is cut into short slices (generous on a busy box).
    assert time.monotonic() - started < 15
    got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)
    assert len(got.get("Messages", [])) == 1  # visible again at once, for another daemon


def test_reconcile_catches_objects_whose_events_never_came(s3, sqs, bucket, make_source, collector):
    queue = make_queue(sqs)  # bucket not wired to it: every event is "lost"
    s3.put_object(Bucket=bucket, Key="lost.jpg", Body=b"l")
    waiting = make_source(bucket, mode="events", queue_url=queue)  # default 60 s grace
    waiting.start(collector.emit, collector.known)
    waiting.scan()
    assert collector.arrivals == []  # too young: its event may still be on its way
    source = make_source(bucket, mode="events", queue_url=queue, reconcile_grace=0)
    source.start(collector.emit, collector.known)
    assert collector.arrivals == []  # events mode runs no startup listing
    source.scan()
    assert collector.keys() == ["lost.jpg"]
    source.scan()
    assert collector.keys() == ["lost.jpg"]


def test_parse_message_shapes():
    assert parse_message('{"Service": "Amazon S3", "Event": "s3:TestEvent"}') == ("test", [])
    assert parse_message("{}") == ("unknown", [])
    assert parse_message("[1]") == ("unknown", [])
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:CompleteMultipartUpload",
        "eventTime": "2026-01-02T03:04:05.678Z",
        "s3": {"bucket": {"name": "b"}, "object": {"key": "a+b%2Bc", "size": 3, "eTag": "abc-2"}},
    }
    removed = {**record, "eventName": "ObjectRemoved:Delete"}
    sns = json.dumps(
        {"Type": "Notification", "Message": json.dumps({"Records": [record, removed]})}
    )
    kind, records = parse_message(sns)
    assert kind == "records" and len(records) == 1
    assert (records[0].key, records[0].size, records[0].etag) == ("a b+c", 3, "abc-2")
    assert records[0].mtime_ns == 1767323045678000000
