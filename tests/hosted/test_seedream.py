"""Seedream 4.x against a fake BytePlus ModelArk images/generations endpoint."""

from __future__ import annotations

import time

import pytest

from backends import BackendError, InvalidRequest, ModelUnavailable, Request
from tests.hosted.conftest import image, make
from tests.hosted.fakes import FakeArk, ark_error

MODEL = "seedream-4-0-250828"


def backend(fake: FakeArk, model: str = MODEL, **options):
    return make("seedream", model, f"{fake.url}/api/v3", **options)


def test_success_single_output(ark: FakeArk) -> None:
    result = backend(ark).run(Request(images=[image()], prompt="on a marble counter", seeds=[7],
                                      params={"size": "2K"}))
    assert len(result.images) == 1
    body = ark.requests[0]["body"]
    assert ark.requests[0]["headers"]["authorization"] == f"Bearer {FakeArk.key}"
    assert body["model"] == MODEL and body["response_format"] == "b64_json" and body["size"] == "2K"
    assert body["sequential_image_generation"] == "disabled" and body["image"][0].startswith("data:image/jpeg;base64,")
    assert "seed" not in body
    out = result.info["outputs"][0]
    assert out["request_id"] == "ark-1" and out["provider"] == "seedream" and out["seed_honoured"] is False
    assert out["cost"] == 0.05 and out["seed"] == 7


def test_several_outputs_in_one_request_map_to_seeds_in_order(ark: FakeArk) -> None:
    result = backend(ark).run(Request(images=[image(), image((0, 0, 255))], prompt="p", seeds=[10, 11, 12]))
    assert len(result.images) == 6 and len(ark.requests) == 2  # one request per input image
    body = ark.requests[0]["body"]
    assert body["sequential_image_generation"] == "auto"
    assert body["sequential_image_generation_options"] == {"max_images": 3}
    outputs = result.info["outputs"]
    assert [o["seed"] for o in outputs] == [10, 11, 12, 10, 11, 12]
    assert [o["input"] for o in outputs] == [0, 0, 0, 1, 1, 1]
    assert [o["batch_position"] for o in outputs[:3]] == [0, 1, 2]
    assert result.images[0].getpixel((0, 0)) != result.images[1].getpixel((0, 0))
    assert result.info["cost"] == pytest.approx(0.3)


def test_fewer_images_than_asked_are_requested_again(ark: FakeArk) -> None:
    ark.short_by = 2
    result = backend(ark).run(Request(images=[image()], prompt="p", seeds=[1, 2, 3, 4]))
    assert len(result.images) == 4 and len(ark.requests) == 2
    assert ark.requests[1]["body"]["sequential_image_generation_options"] == {"max_images": 2}


def test_references_follow_the_input_and_the_15_image_cap_splits_batches(ark: FakeArk) -> None:
    refs = [image((i, i, i)) for i in range(10)]
    result = backend(ark).run(Request(images=[image()], prompt="p", seeds=list(range(6)), references=refs))
    assert len(result.images) == 6
    sizes = [r["body"]["sequential_image_generation_options"]["max_images"] for r in ark.requests]
    assert sorted(sizes) == [2, 4] and all(len(r["body"]["image"]) == 11 for r in ark.requests)


def test_invalid_size_is_rejected_before_any_call(ark: FakeArk) -> None:
    with pytest.raises(InvalidRequest, match="between 1280x720 and 4096x4096"):
        backend(ark).validate(Request(images=[image()], prompt="p", seeds=[1], params={"size": "100x100"}))
    with pytest.raises(InvalidRequest, match="1K, 2K, 4K or WIDTHxHEIGHT"):
        backend(ark).validate(Request(images=[image()], prompt="p", seeds=[1], params={"size": "huge"}))
    with pytest.raises(InvalidRequest, match="at most 14 images"):
        backend(ark).validate(Request(images=[image()], prompt="p", seeds=[1], references=[image()] * 14))
    assert ark.requests == []


def test_sensitive_content_is_a_refusal(ark: FakeArk) -> None:
    with pytest.raises(InvalidRequest, match="refused by seedream: .*InputTextSensitiveContentDetected"):
        backend(ark).run(Request(images=[image()], prompt="forbidden thing", seeds=[1]))
    assert len(ark.requests) == 1


def test_a_refused_image_inside_a_batch_is_a_refusal(ark: FakeArk) -> None:
    ark.script("generate", 200, {"data": [{"b64_json": None, "error": {
        "code": "OutputImageSensitiveContentDetected", "message": "output may contain sensitive content"}}]})
    with pytest.raises(InvalidRequest, match="refused by seedream: OutputImageSensitiveContentDetected"):
        backend(ark).run(Request(images=[image()], prompt="p", seeds=[1]))


def test_429_with_retry_after_then_success(ark: FakeArk) -> None:
    ark.script("generate", 429, ark_error("RateLimitExceeded.EndpointIPMExceeded", "slow down", "TooManyRequests"),
               headers={"retry-after": "0.7"})
    started = time.monotonic()
    result = backend(ark).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert time.monotonic() - started >= 0.7 and result.info["outputs"][0]["attempts"] == 2


def test_retry_after_past_the_wait_budget_gives_up_at_once(ark: FakeArk) -> None:
    ark.script("generate", 429, ark_error("QuotaExceeded", "quota"), headers={"retry-after": "3600"})
    started = time.monotonic()
    with pytest.raises(BackendError, match="QuotaExceeded.*past max_wait") as caught:
        backend(ark).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert type(caught.value) is BackendError and time.monotonic() - started < 2


def test_5xx_then_success(ark: FakeArk) -> None:
    ark.script("generate", 500, ark_error("InternalServiceError", "try again", "InternalServerError"))
    assert len(backend(ark).run(Request(images=[image()], prompt="p", seeds=[1])).images) == 1


def test_timeout_is_retried_then_an_error(ark: FakeArk) -> None:
    for _ in range(2):
        ark.script("generate", 200, {}, delay=1.0)
    with pytest.raises(BackendError, match="no answer within 0.2 s.*2 attempts"):
        backend(ark, timeout=0.2, retries=1).run(Request(images=[image()], prompt="p", seeds=[1]))


def test_unknown_model(ark: FakeArk) -> None:
    with pytest.raises(ModelUnavailable, match="seedream does not know model seedream-9: HTTP 404: InvalidEndpointOrModel"):
        backend(ark, model="seedream-9").run(Request(images=[image()], prompt="p", seeds=[1]))


def test_missing_key_names_the_env_var(monkeypatch) -> None:
    monkeypatch.delenv("ARK_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ModelUnavailable, match="set the environment variable ARK_API_KEY"):
        make("seedream", MODEL, "http://127.0.0.1:9")
