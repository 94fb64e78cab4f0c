"""Issue 20: ``darkroom doctor`` against a moto server (S3 + SQS) and a loopback webhook
receiver: a correct setup is all ok (exit 0); each broken piece is its own ``fail`` line with
the fix (exit 2). Runs the real CLI as a subprocess."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.operator.conftest import darkroom
from tests.s3.conftest import bucket, make_queue, moto_endpoint, notify, s3, sqs  # noqa: F401 -- fixtures
from tests.service.conftest import Receiver

pytestmark = pytest.mark.slow

RULE = """\
name: r
match: {source: inbox}
steps: [{name: one, model: stub}]
output: {sink: out}
"""


def aws_env() -> dict[str, str]:
    """The fake credentials moto_endpoint put in this process's environment."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@dataclass
class Aws:
    """The moto server, its clients and a fresh bucket; writes the config doctor checks."""

    workdir: Path
    endpoint: str
    s3: Any
    sqs: Any
    bucket: str

    def notified_queue(self) -> str:
        """A new queue that ``bucket``'s ObjectCreated notifications go to."""
        queue = make_queue(self.sqs)
        notify(self.s3, self.sqs, self.bucket, queue)
        return queue

    def configure(
        self, queue_url: str, hook: str, *, source: str | None = None, sink: str | None = None
    ) -> None:
        """darkroom.yaml: an SQS-fed S3 source (``source``, default ``bucket``), an S3 sink
        (``sink``, default ``bucket``) and a signed webhook to ``hook``."""
        (self.workdir / "rules").mkdir(exist_ok=True)
        (self.workdir / "rules" / "r.yaml").write_text(RULE)
        source, sink = source or self.bucket, sink or self.bucket
        (self.workdir / "darkroom.yaml").write_text(
            textwrap.dedent(f"""\
            state_dir: state
            sources:
              inbox: {{type: s3, bucket: {source}, prefix: in, mode: events,
                       queue_url: "{queue_url}", endpoint_url: "{self.endpoint}", region: us-east-1}}
            sinks:
              out: {{type: s3, bucket: {sink}, prefix: out, endpoint_url: "{self.endpoint}",
                     region: us-east-1}}
            worker: {{device: cpu}}
            webhooks: {{urls: ["{hook}"], secret: "whsec_{base64.b64encode(b"k" * 24).decode()}"}}
            """)
        )


@pytest.fixture
def aws(
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    s3: Any,  # noqa: F811
    sqs: Any,  # noqa: F811
    bucket: str,  # noqa: F811
) -> Aws:
    return Aws(tmp_path, moto_endpoint, s3, sqs, bucket)


def doctor(tmp_path: Path, *, text: bool = True) -> tuple[int, str, list[dict[str, Any]]]:
    """(exit status, the text report, the --json report) of ``darkroom doctor``."""
    as_json = darkroom("doctor", "--json", cwd=tmp_path, env=aws_env())
    assert "Traceback" not in as_json.stderr, as_json.stderr
    if not text:
        return as_json.returncode, "", json.loads(as_json.stdout)
    plain = darkroom("doctor", cwd=tmp_path, env=aws_env())
    assert as_json.returncode == plain.returncode
    return plain.returncode, plain.stdout, json.loads(as_json.stdout)


def by_check(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["check"]: r for r in records}


def test_a_correct_setup_is_all_ok(aws: Aws, receiver: Receiver) -> None:
    sink = aws.bucket + "-out"
    aws.s3.create_bucket(Bucket=sink)
    aws.configure(aws.notified_queue(), receiver.url, sink=sink)
    status, text, records = doctor(aws.workdir)
    print(text)  # the closing note quotes it
    checks = by_check(records)
    for name in ("config", "aws credentials", "s3 source inbox", "s3 sink out", "sqs source inbox"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks[f"webhook {receiver.url}"]["status"] == "ok"
    assert {"gpu", "disk state_dir", "tool ffmpeg", "tool gs"} <= set(checks)
    worst = max({"ok": 0, "warn": 1, "fail": 2}[r["status"]] for r in records)
    assert status == worst  # 0 here unless the machine itself warns (a nearly full disk)
    assert "fail" not in {r["status"] for r in records}
    # the probe objects were deleted, and nothing else was written
    assert aws.s3.list_objects_v2(Bucket=sink).get("KeyCount", 0) == 0
    # a plain doctor never POSTs an event to the webhook
    assert receiver.received == []


def test_each_broken_piece_is_its_own_fail_line_with_the_fix(aws: Aws) -> None:
    real_queue = make_queue(aws.sqs)  # exists, but the bucket does not notify it
    missing_queue = real_queue.rsplit("/", 1)[0] + "/no-such-queue"
    aws.configure(missing_queue, closed_port_url(), sink=aws.bucket + "-gone")
    status, text, records = doctor(aws.workdir)
    print(text)  # the closing note quotes it
    assert status == 2
    checks = by_check(records)
    sink = checks["s3 sink out"]
    assert sink["status"] == "fail" and "no such bucket" in sink["message"]
    assert "create the bucket" in sink["fix"]
    queue = checks["sqs source inbox"]
    assert queue["status"] == "fail" and "no-such-queue" in queue["message"]
    assert "queue_url" in queue["fix"]
    hook = next(r for name, r in checks.items() if name.startswith("webhook "))
    assert hook["status"] == "fail" and "unreachable" in hook["message"]
    assert checks["s3 source inbox"]["status"] == "ok"  # that one is fine
    for line in text.splitlines():  # one line per check, a fix on every failing one
        if line.startswith("fail"):
            assert "(fix: " in line

    # the queue exists now, but the bucket sends it nothing
    aws.configure(real_queue, closed_port_url())
    _, _, records = doctor(aws.workdir, text=False)
    queue = by_check(records)["sqs source inbox"]
    assert queue["status"] == "fail" and "no notification" in queue["message"]
    assert "put-bucket-notification-configuration" in queue["fix"]

    # the bucket notifies another queue
    aws.notified_queue()
    _, _, records = doctor(aws.workdir, text=False)
    queue = by_check(records)["sqs source inbox"]
    assert queue["status"] == "fail" and "not to" in queue["message"]


def test_missing_bucket_and_missing_credentials(aws: Aws) -> None:
    gone = "dr-no-such-bucket"
    aws.configure(make_queue(aws.sqs), closed_port_url(), source=gone, sink=gone)
    _, _, records = doctor(aws.workdir, text=False)
    source = by_check(records)["s3 source inbox"]
    assert source["status"] == "fail" and "no such bucket" in source["message"]

    env = {k: "" for k in aws_env() if "KEY" in k}  # credentials gone, the rest kept
    result = darkroom("doctor", "--json", cwd=aws.workdir, env={**aws_env(), **env})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    credentials = by_check(json.loads(result.stdout))["aws credentials"]
    assert credentials["status"] == "fail" and "AWS_ACCESS_KEY_ID" in credentials["fix"]


def test_ping_webhooks_sends_a_signed_doctor_ping(aws: Aws, receiver: Receiver) -> None:
    aws.configure(aws.notified_queue(), receiver.url)
    result = darkroom("doctor", "--ping-webhooks", cwd=aws.workdir, env=aws_env())
    assert f"ok    webhook {receiver.url}: accepted a signed doctor.ping" in result.stdout
    (ping,) = receiver.wait_for(1)
    headers = {k.lower(): v for k, v in ping.headers.items()}
    assert json.loads(ping.body)["type"] == "doctor.ping"
    # verified independently, as the Standard Webhooks spec says
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + ping.body
    expected = base64.b64encode(hmac.new(b"k" * 24, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
