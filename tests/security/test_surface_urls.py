"""Issue 15 (quiet surface): a URL reaches a log or an error without user, password or query.

Webhook URLs (tokens in the query), BFL's signed delivery and polling URLs, hosted
``base_url`` and S3 ``endpoint_url``: every place one is logged or repeated in an error
shows at most ``scheme://host[:port]/path``. The BFL client sends its key only to the
configured API host over https (or plain http on loopback: the fakes), or BFL's documented
hosts over https.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from backends import BackendError, Request
from backends.base import ConfigurationFault, OutcomeUnknown
from backends.hosted import origin, trusted_base_url
from daemon.config.settings import load_settings
from daemon.errors import ConfigError
from tests.hosted.conftest import image, make
from tests.hosted.fakes import FakeBFL

LEAKS = ("alice", "hunter2", "sekrit")


def closed_port() -> int:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bfl(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBFL]:
    """The fake BFL API of tests/hosted, on 127.0.0.1."""
    monkeypatch.setenv("BFL_API_KEY", FakeBFL.key)
    with FakeBFL() as fake:
        yield fake


def bfl_backend(fake: FakeBFL, **options):
    return make("bfl-kontext", "flux-kontext-pro", f"{fake.url}/v1", poll_interval=0.02, **options)


@pytest.mark.parametrize(
    "url",
    [
        "http://api.bfl.ai/v1",  # the real host, but the key would travel in clear text
        "http://10.0.0.5:8080/v1",
        "ftp://api.bfl.ai/v1",
        "https://alice:hunter2@api.bfl.ai/v1",
        "https://api.bfl.ai/v1?token=sekrit",
    ],
)
def test_a_hosted_base_url_that_would_expose_the_key_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationFault, match="base_url") as caught:
        trusted_base_url(url)
    assert not any(leak in str(caught.value) for leak in LEAKS)


@pytest.mark.parametrize(
    "url", ["https://api.bfl.ai/v1", "http://127.0.0.1:8123/v1", "http://localhost:1/v1"]
)
def test_https_and_loopback_base_urls_are_accepted(url: str) -> None:
    assert trusted_base_url(url) == url


def test_origin_drops_user_password_path_and_query() -> None:
    assert (
        origin("https://alice:hunter2@x.example:8443/a/b?sig=sekrit#f") == "https://x.example:8443"
    )


@pytest.mark.parametrize(
    "poll",
    [
        "http://alice:hunter2@{host}/v1/get_result?id=x",  # same origin, with credentials
        "https://{host}/v1/get_result?id=x",  # same host, another scheme (and port)
        "http://api.bfl.ai/v1/get_result?id=x&token=sekrit",
        "https://alice:hunter2@api.us1.bfl.ai/v1/get_result?id=x",
        "https://api.bfl.co.uk/v1/get_result?id=x",
        "https://bfl.ai.co.uk/v1/get_result?id=x",
    ],
)
def test_the_bfl_key_goes_to_no_other_polling_url(bfl: FakeBFL, poll: str) -> None:
    host = bfl.url.split("://", 1)[1]
    bfl.script("submit", 200, {"id": "x", "polling_url": poll.format(host=host)})
    with pytest.raises(OutcomeUnknown, match="not the configured API host") as caught:
        bfl_backend(bfl).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(bfl.requests) == 1  # the submit; no poll carried the key anywhere
    assert not any(leak in str(caught.value) for leak in LEAKS)


def test_a_signed_delivery_url_is_never_logged_nor_repeated(
    bfl: FakeBFL, caplog: pytest.LogCaptureFixture
) -> None:
    sample = f"http://127.0.0.1:{closed_port()}/delivery/x?sig=sekrit&token=sekrit"
    bfl.polls_needed = 1
    bfl.script("poll", 200, {"id": "x", "status": "Ready", "result": {"sample": sample}})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendError) as caught:  # unreachable after retries (a free GET)
        bfl_backend(bfl, retries=1).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert "cannot connect" in str(caught.value)
    assert any("retrying" in r.getMessage() for r in caplog.records)  # it was logged
    text = str(caught.value) + "\n".join(r.getMessage() for r in caplog.records)
    assert "sekrit" not in text and "sig=" not in text


def test_an_s3_endpoint_with_credentials_or_a_query_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        "sources:\n  shop:\n    type: s3\n    bucket: shop-uploads\n"
        '    endpoint_url: "http://alice:hunter2@127.0.0.1:9000/?token=sekrit"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    text = str(caught.value)
    assert "sources.shop.endpoint_url" in text and "darkroom.yaml:5" in text
    assert not any(leak in text for leak in LEAKS)


def test_doctor_names_a_webhook_without_its_token(tmp_path: Path) -> None:
    from daemon.diagnose.webhooks import check_webhooks

    url = f"http://alice:hunter2@127.0.0.1:{closed_port()}/hook?token=sekrit"
    config = tmp_path / "darkroom.yaml"
    config.write_text(f"webhooks:\n  urls: ['{url}']\n")
    findings = check_webhooks(load_settings(config), ping=False)
    text = json.dumps(
        [vars(f) if hasattr(f, "__dict__") else str(f) for f in findings], default=str
    )
    assert "127.0.0.1" in text and not any(leak in text for leak in LEAKS)


def test_a_webhook_that_never_answers_is_logged_without_its_query() -> None:
    from daemon.service.webhooks import WebhookSender, new_secret

    url = f"https://alice:hunter2@127.0.0.1:{closed_port()}/hook?token=sekrit"
    with structlog.testing.capture_logs() as logs:
        sender = WebhookSender([url], new_secret(), backoff=0.01, max_attempts=2)
        sender.start()
        sender.send({"type": "source.done", "id": "e1"})
        assert sender.flush(30)
        sender.stop(timeout=1)
    text = json.dumps(logs, default=str)
    assert "webhook not delivered" in text
    assert not any(leak in text for leak in LEAKS)


def test_botocore_messages_reach_logs_without_query_or_credentials() -> None:
    """botocore repeats the request URL in its errors (an EndpointConnectionError names a
    presigned URL, a user:password endpoint): the daemon's translation cuts them."""
    from botocore.exceptions import EndpointConnectionError

    from daemon.aws import translate

    url = "http://alice:hunter2@127.0.0.1:9/bucket/key.png?X-Amz-Signature=deadbeef"
    error = translate(EndpointConnectionError(endpoint_url=url), "reading s3://bucket/key.png")
    text = str(error)
    assert "hunter2" not in text and "deadbeef" not in text and "alice" not in text
    assert "127.0.0.1:9/bucket/key.png" in text
