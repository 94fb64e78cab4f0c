"""A running daemon whose source or sink is failing says so, and says when it is fixed.

The real daemon (a subprocess) watches an S3 prefix in a bucket that does not exist yet, an
event-mode prefix whose queue does not exist yet, and writes into a folder sink whose path
runs through a file. ``darkroom status`` (text and --json), ``/readyz`` and systemd's STATUS
(a fake NOTIFY_SOCKET) must name each failing part with its reason and since when; the log
says it once, not every few seconds. Fixing each cause clears it everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO, Daemon, wait_for
from tests.s3.conftest import moto_endpoint, s3, sqs  # noqa: F401 -- fixtures
from tests.service.conftest import NotifySocket

pytestmark = pytest.mark.slow

RULE = """\
name: r
match: {source: cam, include: ["**/*.png"]}
prompt: "{stem}"
steps:
  - {name: explore, model: stub, variants: 1, seed: 5}
output: {sink: out}
"""


def status(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "status", "--config", str(config), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def notify_socket(tmp_path_factory: pytest.TempPathFactory) -> Any:
    sock = NotifySocket(f"@darkroom-test-{uuid.uuid4().hex}")
    yield sock
    sock.close()


def test_failing_source_and_sink_show_in_status_readyz_and_systemd_then_clear(
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    s3: Any,  # noqa: F811
    sqs: Any,  # noqa: F811
    model_cache: Path,
    notify_socket: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = f"dr-missing-{uuid.uuid4().hex[:10]}"  # created later: the fix
    queue_name = f"q-missing-{uuid.uuid4().hex[:10]}"
    queue_url = f"{moto_endpoint}/123456789012/{queue_name}"
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the sink's folder should go")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULE)
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        state_dir: state
        rules_dir: rules
        model_cache: {model_cache}
        sources:
          cam: {{type: s3, bucket: {bucket}, prefix: in, endpoint_url: "{moto_endpoint}", region: us-east-1, poll_interval: 1}}
          events: {{type: s3, mode: events, bucket: {bucket}, prefix: ev, queue_url: "{queue_url}", endpoint_url: "{moto_endpoint}", region: us-east-1, wait_time: 1}}
        sinks:
          out: {{type: folder, path: {blocker}/out}}
        worker: {{device: cpu, threads: 1, stop_timeout: 10}}
        metrics: {{enabled: true, port: 0, check_interval: 0.5}}
        log: {{format: json}}
        """)
    )
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    daemon = Daemon(tmp_path, config, tmp_path / "daemon.log")
    daemon.start()
    try:
        url = daemon.events("metrics listening")[0]["url"]

        # /readyz: not ready, naming each failing part, its reason and since when.
        def unready() -> dict[str, Any] | None:
            code, body = readyz(url)
            parts = body["details"]["parts"]
            failing = {p for p, v in parts.items() if not v["ok"]}
            wanted = {"source:cam", "source:events", "sink:out"}
            return body if code == 503 and wanted <= failing else None

        body = wait_for(unready, 60, "/readyz to name the three failing parts")
        assert isinstance(body, dict)
        parts = body["details"]["parts"]
        assert bucket in parts["source:cam"]["reason"]
        assert "no such bucket" in parts["source:cam"]["reason"]
        assert queue_name in parts["source:events"]["reason"]
        assert "blocker" in parts["sink:out"]["reason"]
        assert parts["source:cam"]["since"].endswith("Z")

        # systemd's STATUS line says it too.
        def failing_status() -> str | None:
            for message in notify_socket.drain():
                if "FAILING" in message.get("STATUS", ""):
                    return message["STATUS"]
            return None

        line = wait_for(failing_status, 30, "a STATUS line naming a failing part")
        assert "FAILING" in str(line) and "see darkroom status" in str(line)

        # darkroom status: a line per part with its state, reason and since when.
        text = status(config)
        assert text.returncode == 0, text.stderr
        cam = next(ln for ln in text.stdout.splitlines() if "source:cam" in ln)
        assert "FAILING since" in cam and "no such bucket" in cam
        sink = next(ln for ln in text.stdout.splitlines() if "sink:out" in ln)
        assert "FAILING since" in sink and "blocker" in sink

        # --json: one document with the same facts.
        document = json.loads(status(config, "--json").stdout)
        by_part = {p["part"]: p for p in document["parts"]}
        assert document["daemon"]["running"] is True
        assert by_part["source:cam"]["state"] == "failing"
        assert "no such bucket" in by_part["source:cam"]["error"]
        assert by_part["source:cam"]["since"].endswith("Z")
        assert by_part["source:events"]["state"] == "failing"

        # Said once per part in the log, not at every check (the checks run every 0.5 s).
        def failed_checks() -> int:
            parts = json.loads(status(config, "--json").stdout)["parts"]
            return int(next(p for p in parts if p["part"] == "source:cam")["failed_checks"])

        wait_for(lambda: failed_checks() >= 4, 60, "several failed checks of source:cam")
        assert (
            len(
                daemon.events(
                    "cannot reach a source or sink; its work waits until it is fixed",
                    part="source:cam",
                )
            )
            == 1
        )

        # The fixes: the bucket, the queue, and the sink's folder.
        s3.create_bucket(Bucket=bucket)
        sqs.create_queue(QueueName=queue_name)
        blocker.unlink()
        blocker.mkdir()

        def recovered() -> dict[str, Any] | None:
            code, body = readyz(url)
            return body if code == 200 else None

        body = wait_for(recovered, 60, "/readyz to be ready again")
        assert isinstance(body, dict)
        assert all(v["ok"] for v in body["details"]["parts"].values())
        for part in ("source:cam", "source:events", "sink:out"):
            assert daemon.events("source or sink reachable again", part=part)
        text = status(config)
        assert "FAILING" not in text.stdout
        assert "source:cam" in text.stdout and " ok (checked" in text.stdout
        wait_for(
            lambda: any("FAILING" not in m.get("STATUS", "FAILING") for m in notify_socket.drain()),
            30,
            "a STATUS line without a failing part",
        )
        assert daemon.stop() == 0
    finally:
        daemon.kill()

    # Stopped: status says the report is what the daemon saw before it stopped.
    text = status(config)
    assert "before it stopped" in text.stdout
