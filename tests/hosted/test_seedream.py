"""Seedream 4.x against a fake BytePlus ModelArk images/generations endpoint."""

from __future__ import annotations

import time

import pytest

from backends import BackendError, InvalidRequest, Request
from backends.base import ConfigurationFault, OutcomeUnknown, Refused
from backends.hosted import check_model
from tests.hosted.conftest import image, make, profile
from tests.hosted.fakes import FakeArk, ark_error, ark_withheld

MODEL = "seedream-4-0-250828"


def backend(fake: FakeArk, model: str = MODEL, **options):
    return make("seedream", model, f"{fake.url}/api/v3", **options)


def test_success_single_output(ark: FakeArk) -> None:
    result = backend(ark).run(
        Request(images=[image()], prompt="on a marble counter", seeds=[7], params={"size": "2K"})
    )
    assert len(result.images) == 1
    body = ark.requests[0]["body"]
    assert ark.requests[0]["headers"]["authorization"] == f"Bearer {FakeArk.key}"
    assert body["model"] == MODEL and body["response_format"] == "b64_json"
    assert body["size"] == "2368x1776"  # ~2K pixels at the input's 4:3
    assert body["sequential_image_generation"] == "disabled" and body["image"][0].startswith(
        "data:image/jpeg;base64,"
    )
    assert "seed" not in body and "sequential_image_generation_options" not in body
    out = result.info["outputs"][0]
    assert out["request_id"] == "ark-1" and out["provider"] == "seedream"
    assert out["seed_sent"] is False and out["seed_honoured"] is False
    assert out["cost"] == 0.05 and out["seed"] == 7 and out["size_sent"] == "2368x1776"


def test_one_request_per_input_and_seed(ark: FakeArk) -> None:
    result = backend(ark).run(
        Request(images=[image(), image((0, 0, 255))], prompt="p", seeds=[10, 11, 12])
    )
    assert len(result.images) == 6 and len(ark.requests) == 6
    assert all(r["body"]["sequential_image_generation"] == "disabled" for r in ark.requests)
    outputs = result.info["outputs"]
    assert [o["seed"] for o in outputs] == [10, 11, 12, 10, 11, 12]
    assert [o["input"] for o in outputs] == [0, 0, 0, 1, 1, 1]
    assert len({o["request_id"] for o in outputs}) == 6
    assert result.info["cost"] == pytest.approx(0.3)


def test_a_model_that_returns_one_image_per_request_still_delivers_every_variant(
    ark: FakeArk,
) -> None:
    """Issue 21 (2): "auto" mode with 4 seeds got 1 image per request: 3 requests, 3 paid images,
    then an error (and a job retry: up to 9 paid, none delivered). Now 4 requests, 4 images."""
    ark.auto_returns = 1
    result = backend(ark).run(Request(images=[image()], prompt="p", seeds=[1, 2, 3, 4]))
    assert all(img is not None for img in result.images) and len(result.images) == 4
    assert len(ark.requests) == 4


def test_the_output_keeps_the_input_aspect(ark: FakeArk) -> None:
    """Issue 21 (3): no size sent -> a 2048x2048 square for a 16:9 packshot."""
    wide = image(size=(160, 90))
    result = backend(ark).run(Request(images=[wide], prompt="p", seeds=[1]))
    assert ark.requests[0]["body"]["size"] == "2728x1536"
    width, height = result.images[0].size
    assert width / height == pytest.approx(16 / 9, rel=0.05)


def test_sizes_stay_within_each_models_limits(ark: FakeArk) -> None:
    v40 = profile("seedream-4", f"{ark.url}/api/v3")
    v45 = profile("seedream-4.5", f"{ark.url}/api/v3")
    assert v40.dimensions("1K", 1.0) == (1024, 1024)
    w, h = v40.dimensions("4K", 16 / 9)
    assert w * h <= 4096 * 4096 and w / h == pytest.approx(16 / 9, rel=0.01)
    w, h = v40.dimensions("2K", 1 / 40)  # beyond 1:16: clamped
    assert h / w == pytest.approx(16, rel=0.02) and w * h >= 1280 * 720
    w, h = v45.dimensions("2K", 21 / 9)  # 4.5 starts at 2560x1440 pixels
    assert w * h >= 2560 * 1440
    with pytest.raises(InvalidRequest, match="must be one of 2K, 4K"):
        v45.validate(Request(images=[image()], prompt="p", seeds=[1], params={"size": "1K"}))
    result = v45.run(Request(images=[image(size=(90, 160))], prompt="p", seeds=[1]))
    assert result.images[0].size[1] > result.images[0].size[0]


def test_references_follow_the_input(ark: FakeArk) -> None:
    refs = [image((i, i, i)) for i in range(10)]
    result = backend(ark).run(
        Request(images=[image()], prompt="p", seeds=list(range(3)), references=refs)
    )
    assert len(result.images) == 3 and all(len(r["body"]["image"]) == 11 for r in ark.requests)


def test_invalid_size_is_rejected_before_any_call(ark: FakeArk) -> None:
    with pytest.raises(InvalidRequest, match="between 921,600 and 16,777,216 pixels"):
        backend(ark).validate(
            Request(images=[image()], prompt="p", seeds=[1], params={"size": "100x100"})
        )
    with pytest.raises(InvalidRequest, match="1K, 2K, 4K or WIDTHxHEIGHT"):
        backend(ark).validate(
            Request(images=[image()], prompt="p", seeds=[1], params={"size": "huge"})
        )
    with pytest.raises(InvalidRequest, match="at most 14 images"):
        backend(ark).validate(
            Request(images=[image()], prompt="p", seeds=[1], references=[image()] * 14)
        )
    assert ark.requests == []


def test_sensitive_content_is_a_refusal(ark: FakeArk) -> None:
    with pytest.raises(Refused, match="refused by seedream: .*InputTextSensitiveContentDetected"):
        backend(ark).run(Request(images=[image()], prompt="forbidden thing", seeds=[1]))
    assert len(ark.requests) == 1


@pytest.mark.parametrize(
    "code",
    [
        "InputImageRiskDetection",
        "OutputImageRiskDetection",
        "ContentPolicyViolation",
        "InputTextSensitiveContentDetected.PolicyViolation",
    ],
)
def test_risk_detection_and_policy_codes_are_refusals(ark: FakeArk, code: str) -> None:
    """Issue 21 (5): only ``*Sensitive*`` codes were refusals; these were InvalidRequest/BackendError."""
    ark.script("generate", 400, ark_error(code, "the input or output may violate the policy"))
    with pytest.raises(Refused, match=f"refused by seedream: HTTP 400: {code}"):
        backend(ark).run(Request(images=[image()], prompt="p", seeds=[1]))
    ark.script("generate", 200, ark_withheld(MODEL, code))
    with pytest.raises(Refused, match=code):
        backend(ark).run(Request(images=[image()], prompt="p", seeds=[1]))


def test_a_withheld_image_is_a_failed_variant_and_the_others_are_kept(ark: FakeArk) -> None:
    ark.script("generate", 200, ark_withheld(MODEL))
    result = backend(ark, concurrency=1).run(Request(images=[image()], prompt="p", seeds=[1, 2]))
    assert result.images[0] is None and result.images[1] is not None
    assert "OutputImageSensitiveContentDetected" in result.info["outputs"][0]["refusal"]


def test_429_with_retry_after_then_success(ark: FakeArk) -> None:
    ark.script(
        "generate",
        429,
        ark_error("RateLimitExceeded.EndpointIPMExceeded", "slow down", "TooManyRequests"),
        headers={"retry-after": "0.7"},
    )
    started = time.monotonic()
    result = backend(ark).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert time.monotonic() - started >= 0.7 and result.info["outputs"][0]["attempts"] == 2


def test_retry_after_past_the_wait_budget_gives_up_at_once(ark: FakeArk) -> None:
    ark.script(
        "generate",
        429,
        ark_error("RateLimitExceeded.EndpointRPMExceeded", "slow down"),
        headers={"retry-after": "3600"},
    )
    started = time.monotonic()
    with pytest.raises(BackendError, match="RateLimitExceeded.*past max_wait") as caught:
        backend(ark).run(Request(images=[image()], prompt="p", seeds=[1]))
    # It gave up at once instead of sleeping the hour it was told to wait (generous bound).
    assert type(caught.value) is BackendError and time.monotonic() - started < 600


def test_account_quota_is_a_configuration_fault(ark: FakeArk) -> None:
    ark.quota_exceeded = True
    with pytest.raises(ConfigurationFault, match="account's limit .* QuotaExceeded"):
        backend(ark).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(ark.requests) == 1


def test_5xx_is_not_resent(ark: FakeArk) -> None:
    """Issue 21 (4): a 500 after sending may have been billed: one request, OutcomeUnknown."""
    ark.script(
        "generate", 500, ark_error("InternalServiceError", "try again", "InternalServerError")
    )
    with pytest.raises(OutcomeUnknown, match=r"InternalServiceError.*\[request ark-1\]"):
        backend(ark, retries=3).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(ark.requests) == 1


def test_read_timeout_is_not_resent(ark: FakeArk) -> None:
    for _ in range(2):
        ark.script("generate", 200, {}, delay=1.0)
    with pytest.raises(OutcomeUnknown, match="no answer within 0.2 s"):
        backend(ark, timeout=0.2, retries=3).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(ark.requests) == 1


def test_unknown_or_regionally_retired_model(ark: FakeArk) -> None:
    with pytest.raises(
        ConfigurationFault,
        match="seedream does not know model seedream-9 for this key: "
        "HTTP 404: InvalidEndpointOrModel",
    ):
        backend(ark, model="seedream-9").run(Request(images=[image()], prompt="p", seeds=[1]))
    ark.retired = frozenset({MODEL})
    with pytest.raises(ConfigurationFault, match="retired in this region"):
        backend(ark).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert (
        backend(ark, model="seedream-4-5-251128")
        .run(Request(images=[image()], prompt="p", seeds=[1]))
        .images[0]
        is not None
    )


def test_check_model_says_it_cannot_verify_for_free(ark: FakeArk) -> None:
    found = check_model(backend(ark).spec)
    assert found.verified is False and "paid request" in found.detail and ark.requests == []


def test_missing_key_names_the_env_var(monkeypatch) -> None:
    monkeypatch.delenv("ARK_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigurationFault, match="set the environment variable ARK_API_KEY"):
        make("seedream", MODEL, "http://127.0.0.1:9")
