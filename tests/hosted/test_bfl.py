"""FLUX.1 Kontext [pro]/[max] against a fake BFL API: submit, poll, download."""

from __future__ import annotations

import time

import pytest

from backends import BackendError, InvalidRequest, ModelUnavailable, Request
from backends.base import ConfigurationFault, OutcomeUnknown, Refused
from backends.hosted import check_model
from tests.hosted.conftest import image, make
from tests.hosted.fakes import FakeBFL

PRO = "flux-kontext-pro"


def backend(fake: FakeBFL, model: str = PRO, **options):
    return make("bfl-kontext", model, f"{fake.url}/v1", **{"poll_interval": 0.02, **options})


def test_async_task_takes_several_polls(bfl: FakeBFL) -> None:
    bfl.polls_needed = 4
    result = backend(bfl).run(Request(images=[image()], prompt="make it night", seeds=[5]))
    assert len(result.images) == 1 and result.images[0].size == (40, 40)
    out = result.info["outputs"][0]
    assert out["request_id"] == "task-1" and out["polls"] == 4
    # Issue 21 (5): BFL sends the seed but does not promise to reproduce from it.
    assert out["seed_sent"] is True and out["seed_honoured"] is False
    assert out["provider"] == "bfl" and out["model"] == PRO and out["provider_cost_credits"] == 4.0
    body = bfl.requests[0]["body"]
    assert bfl.requests[0]["headers"]["x-key"] == FakeBFL.key
    assert (
        body["seed"] == 5 and body["prompt"] == "make it night" and body["output_format"] == "png"
    )
    assert [r["path"].split("?")[0] for r in bfl.requests] == ["/v1/flux-kontext-pro"] + [
        "/v1/get_result"
    ] * 4 + ["/delivery/task-1"]
    assert "x-key" not in bfl.requests[-1]["headers"]  # the delivery URL never gets the key


def test_several_inputs_and_seeds_and_references(bfl: FakeBFL) -> None:
    bfl.polls_needed = 1
    refs = [image((0, 255, 0)), image((0, 0, 255))]
    result = backend(bfl).run(
        Request(images=[image(), image()], prompt="p", seeds=[1, 2], references=refs)
    )
    assert len(result.images) == 4
    submits = [r["body"] for r in bfl.requests if r["method"] == "POST"]
    assert all({"input_image", "input_image_2", "input_image_3"} <= set(b) for b in submits)
    assert all("input_image_4" not in b for b in submits)
    assert [o["seed"] for o in result.info["outputs"]] == [1, 2, 1, 2]


def test_too_many_references_is_invalid(bfl: FakeBFL) -> None:
    with pytest.raises(InvalidRequest, match="at most 4 images.*drop 1"):
        backend(bfl).validate(
            Request(images=[image()], prompt="p", seeds=[1], references=[image()] * 4)
        )
    with pytest.raises(InvalidRequest, match="between 21:9 and 9:21"):
        backend(bfl).validate(
            Request(images=[image()], prompt="p", seeds=[1], params={"aspect_ratio": "32:9"})
        )


def test_moderated_task_is_a_refusal_with_the_reason(bfl: FakeBFL) -> None:
    with pytest.raises(
        Refused, match="refused by bfl: Content Moderated \\(Derivative Works Filter\\)"
    ):
        backend(bfl).run(Request(images=[image()], prompt="forbidden", seeds=[1]))


def test_error_status_is_retryable(bfl: FakeBFL) -> None:
    bfl.script("poll", 200, {"id": "task-0", "status": "Error", "error": "generation failed"})
    with pytest.raises(BackendError, match="status 'Error': generation failed") as caught:
        backend(bfl).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert type(caught.value) is BackendError


def test_429_with_retry_after_on_submit(bfl: FakeBFL) -> None:
    bfl.polls_needed = 1
    bfl.script("submit", 429, {"detail": "Too many active tasks"}, headers={"retry-after": "0.5"})
    started = time.monotonic()
    result = backend(bfl).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert time.monotonic() - started >= 0.5 and len(result.images) == 1


def test_5xx_while_polling_then_success(bfl: FakeBFL) -> None:
    bfl.polls_needed = 2
    bfl.script("poll", 502, {"detail": "bad gateway"})
    result = backend(bfl).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(result.images) == 1


def test_submit_read_timeout_is_not_resubmitted(bfl: FakeBFL) -> None:
    """Issue 21 (4): a submit that timed out may have created a paid task: one POST, no retry."""
    for _ in range(2):
        bfl.script("submit", 200, {}, delay=1.0)
    with pytest.raises(OutcomeUnknown, match="no answer within 0.2 s.*not resent"):
        backend(bfl, timeout=0.2, retries=3).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(bfl.calls("/v1/flux-kontext-pro")) == 1


def test_submit_5xx_is_not_resubmitted(bfl: FakeBFL) -> None:
    """Issue 21 (4): a 502 on submit -> OutcomeUnknown, one task at most, never two."""
    bfl.script("submit", 502, {"detail": "bad gateway"}, headers={"x-request-id": "edge-7"})
    with pytest.raises(OutcomeUnknown, match=r"HTTP 502: bad gateway \[request edge-7\]") as caught:
        backend(bfl, retries=3).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert caught.value.request_id == "edge-7"
    assert len(bfl.calls("/v1/flux-kontext-pro")) == 1


def test_submit_connection_refused_is_retried(bfl: FakeBFL) -> None:
    """Connection-phase errors never reached the provider: resending is safe (and free)."""
    b = make("bfl-kontext", PRO, "http://127.0.0.1:9/v1", retries=1)  # port 9: nothing listens
    with pytest.raises(
        BackendError, match="cannot connect.*2 attempts.*nothing was charged"
    ) as caught:
        b.run(Request(images=[image()], prompt="p", seeds=[1]))
    assert type(caught.value) is BackendError


def test_out_of_credits_is_a_configuration_fault_not_retried(bfl: FakeBFL) -> None:
    """Issue 21 (5): 402 used to be a retried BackendError; it waits for the operator."""
    bfl.credits = 0
    with pytest.raises(
        ConfigurationFault, match="out of credits: HTTP 402: Insufficient credits.*Payment Required"
    ):
        backend(bfl, retries=3).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(bfl.calls("/v1/flux-kontext-pro")) == 1
    with pytest.raises(ConfigurationFault, match="no credits left"):
        check_model(backend(bfl).spec)


def test_error_text_comes_from_every_field(bfl: FakeBFL) -> None:
    """Issue 21 (5): BFL error text was read from ``detail`` only."""
    bfl.script("submit", 400, {"message": "input_image is too large", "error": "ImageTooLarge"})
    with pytest.raises(InvalidRequest, match="input_image is too large; ImageTooLarge"):
        backend(bfl).run(Request(images=[image()], prompt="p", seeds=[1]))
    bfl.script(
        "poll",
        200,
        {
            "id": "t",
            "status": "Error",
            "details": {"reason": "GPU fault"},
            "message": "generation failed",
        },
    )
    with pytest.raises(
        BackendError, match="status 'Error': GPU|reason: GPU fault; generation failed"
    ):
        backend(bfl).run(Request(images=[image()], prompt="p", seeds=[1]))


def test_task_past_poll_timeout_is_not_resubmitted(bfl: FakeBFL) -> None:
    bfl.polls_needed = 1000
    with pytest.raises(
        OutcomeUnknown, match="still Pending after 0.2 s.*not submitted again"
    ) as caught:
        backend(bfl, poll_timeout=0.2).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert caught.value.request_id == "task-1"


def test_check_model_reads_credits(bfl: FakeBFL) -> None:
    found = check_model(backend(bfl).spec)
    assert found.provider == "bfl" and found.verified is False and "100.0 credits" in found.detail


def test_validation_error_422_is_invalid_request(bfl: FakeBFL) -> None:
    bfl.script(
        "submit",
        422,
        {"detail": [{"loc": ["body", "aspect_ratio"], "msg": "bad ratio", "type": "x"}]},
    )
    with pytest.raises(InvalidRequest, match="body.aspect_ratio: bad ratio"):
        backend(bfl).run(Request(images=[image()], prompt="p", seeds=[1]))


def test_unknown_model(bfl: FakeBFL) -> None:
    with pytest.raises(ModelUnavailable, match="bfl does not know model flux-kontext-ultra"):
        backend(bfl, model="flux-kontext-ultra").run(
            Request(images=[image()], prompt="p", seeds=[1])
        )


def test_webhook_mode_polls_get_result(bfl: FakeBFL, monkeypatch) -> None:
    bfl.polls_needed = 2
    monkeypatch.setenv("BFL_WEBHOOK_SECRET", "hook-secret")
    b = backend(bfl, webhook_url="https://darkroom.example/hooks/bfl")
    result = b.run(Request(images=[image()], prompt="p", seeds=[1]))
    body = bfl.requests[0]["body"]
    assert (
        body["webhook_url"] == "https://darkroom.example/hooks/bfl"
        and body["webhook_secret"] == "hook-secret"
    )
    assert len(result.images) == 1 and "hook-secret" not in repr(result.info)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/v1/get_result?id=x",
        "https://api.bfl.ai.evil.example/v1/get_result?id=x",  # look-alike prefix
        "https://evil-bfl.ai/v1/get_result?id=x",  # not a subdomain at all
        "https://attacker.bfl.ai/v1/get_result?id=x",  # last-two-labels match, not documented
        "http://api.us1.bfl.ai/v1/get_result?id=x",  # documented host, but not https
    ],
)
def test_polling_url_outside_the_documented_hosts_gets_no_key(bfl: FakeBFL, url: str) -> None:
    """Issue 21 (5): trust was "same last two labels"; now exact configured or documented hosts."""
    bfl.script("submit", 200, {"id": "x", "polling_url": url})
    with pytest.raises(OutcomeUnknown, match="not the configured API host"):
        backend(bfl).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(bfl.requests) == 1


def test_documented_regional_polling_host_is_trusted(bfl: FakeBFL) -> None:
    b = backend(bfl)
    assert b.trusted("https://api.us1.bfl.ai/v1/get_result?id=x")
    assert b.trusted(f"{bfl.url}/v1/get_result?id=x")
    assert not b.trusted("https://api.us1.bfl.ai:8443/v1/get_result?id=x")


def test_missing_key_names_the_env_var(monkeypatch) -> None:
    monkeypatch.delenv("BFL_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ModelUnavailable, match="set the environment variable BFL_API_KEY"):
        make("bfl-kontext", PRO, "http://127.0.0.1:9")
