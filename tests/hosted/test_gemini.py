"""Gemini image models (Nano Banana) against a fake generateContent endpoint."""

from __future__ import annotations

import base64
import io
import logging
import time

import pytest
from PIL import Image

from backends import BackendError, InvalidRequest, ModelUnavailable, Request
from backends.base import ConfigurationFault, OutcomeUnknown, Refused
from backends.hosted import check_model
from backends.profiles import PROFILES
from tests.hosted.conftest import image, make, profile
from tests.hosted.fakes import GEMINI_RETIRED, FakeGemini, gemini_error, gemini_quota

PRO = "gemini-3-pro-image"
FLASH = "gemini-3.1-flash-image"


def backend(fake: FakeGemini, model: str = PRO, **options):
    return make(
        "gemini-image",
        model,
        f"{fake.url}/v1beta",
        **{"image_sizes": ["1K", "2K", "4K"], "max_input_images": 14, **options},
    )


def test_success_one_output_per_seed_with_provenance(gemini: FakeGemini) -> None:
    b = backend(gemini)
    result = b.run(
        Request(
            images=[image()],
            prompt="make the sky stormy",
            seeds=[1, 2],
            params={"size": "2K", "aspect_ratio": "4:3"},
        )
    )
    assert len(result.images) == 2 and all(i.mode == "RGB" for i in result.images)
    assert result.images[0].getpixel((0, 0)) != result.images[1].getpixel(
        (0, 0)
    )  # seed reached the fake
    outputs = result.info["outputs"]
    ids = [o["request_id"] for o in outputs]
    assert len(set(ids)) == 2 and all(i.startswith("resp-") for i in ids)
    assert outputs[0]["provider"] == "gemini" and outputs[0]["model"] == PRO
    assert outputs[0]["cost"] == 0.05 and result.info["cost"] == 0.1
    assert outputs[0]["seed_honoured"] is False and outputs[0]["seed_sent"] is True
    assert outputs[0]["seconds"] >= 0 and outputs[0]["refusal"] is None
    sent = gemini.requests[0]
    assert sent["headers"]["x-goog-api-key"] == FakeGemini.key
    config = sent["body"]["generationConfig"]
    assert config["imageConfig"] == {"aspectRatio": "4:3", "imageSize": "2K"}
    assert config["responseModalities"] == ["IMAGE"]
    parts = sent["body"]["contents"][0]["parts"]
    assert parts[0] == {"text": "make the sky stormy"}
    Image.open(io.BytesIO(base64.b64decode(parts[1]["inlineData"]["data"]))).verify()
    assert (
        sent["headers"]["x-server-timeout"] == "5"
    )  # the server stops when Darkroom stops waiting


def test_price_by_size_preset(gemini: FakeGemini) -> None:
    b = backend(gemini, price_by_size={"1K": 0.134, "4K": 0.24}, default_size="1K")
    four_k = b.run(Request(images=[image()], prompt="p", seeds=[1], params={"size": "4K"}))
    default = b.run(Request(images=[image()], prompt="p", seeds=[1]))
    assert four_k.info["outputs"][0]["cost"] == 0.24 and default.info["outputs"][0]["cost"] == 0.134


def test_several_references_become_image_parts(gemini: FakeGemini) -> None:
    refs = [image((i * 18, 0, 0)) for i in range(13)]
    result = backend(gemini).run(Request(images=[image()], prompt="p", seeds=[3], references=refs))
    parts = gemini.requests[0]["body"]["contents"][0]["parts"]
    assert len(parts) == 1 + 14 and sum("inlineData" in p for p in parts) == 14
    assert len(result.images) == 1


def test_more_than_14_images_is_invalid_before_any_call(gemini: FakeGemini) -> None:
    refs = [image() for _ in range(14)]
    with pytest.raises(InvalidRequest, match="at most 14 images.*drop 1"):
        backend(gemini).validate(Request(images=[image()], prompt="p", seeds=[1], references=refs))
    assert gemini.requests == []


def test_unsupported_size_preset_is_invalid(gemini: FakeGemini) -> None:
    flash = backend(gemini, model=FLASH, image_sizes=[])
    with pytest.raises(InvalidRequest, match="no size presets"):
        flash.validate(Request(images=[image()], prompt="p", seeds=[1], params={"size": "2K"}))
    with pytest.raises(InvalidRequest, match="1K, 2K, 4K"):
        backend(gemini).validate(
            Request(images=[image()], prompt="p", seeds=[1], params={"size": "8K"})
        )


def test_prompt_block_is_a_refusal_not_retried(gemini: FakeGemini) -> None:
    with pytest.raises(Refused, match=r"refused by gemini: prompt blocked \(PROHIBITED_CONTENT\)"):
        backend(gemini).run(Request(images=[image()], prompt="something forbidden", seeds=[1]))
    assert len(gemini.requests) == 1


def test_image_safety_finish_reason_is_a_refusal(gemini: FakeGemini) -> None:
    with pytest.raises(InvalidRequest, match="IMAGE_SAFETY: I can't create that image"):
        backend(gemini).run(Request(images=[image()], prompt="unsafe-output", seeds=[1]))


def test_429_retry_after_is_honoured(gemini: FakeGemini) -> None:
    gemini.script(
        "generate",
        429,
        gemini_error(429, "RESOURCE_EXHAUSTED", "quota"),
        headers={"retry-after": "1"},
    )
    started = time.monotonic()
    result = backend(gemini).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert time.monotonic() - started >= 1.0
    assert len(gemini.requests) == 2 and result.info["outputs"][0]["attempts"] == 2


def test_429_retry_info_delay_in_body_is_honoured(gemini: FakeGemini) -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.6s"}]
    gemini.script("generate", 429, gemini_error(429, "RESOURCE_EXHAUSTED", "quota", details))
    started = time.monotonic()
    backend(gemini).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert time.monotonic() - started >= 0.6


def test_quota_exhausted_after_retries_is_a_retryable_backend_error(gemini: FakeGemini) -> None:
    for _ in range(3):
        gemini.script(
            "generate", 429, gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for metric")
        )
    with pytest.raises(
        BackendError, match="RESOURCE_EXHAUSTED Quota exceeded.*3 attempts"
    ) as caught:
        backend(gemini).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert type(caught.value) is BackendError  # the daemon retries later


def test_5xx_is_not_resent(gemini: FakeGemini) -> None:
    """Issue 21 (4): a 5xx may come after the image was made (and billed): one request only."""
    gemini.script("generate", 503, gemini_error(503, "UNAVAILABLE", "The model is overloaded."))
    with pytest.raises(OutcomeUnknown, match="UNAVAILABLE The model is overloaded.*not resent"):
        backend(gemini, retries=3).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(gemini.requests) == 1


def test_read_timeout_is_not_resent(gemini: FakeGemini) -> None:
    """Issue 21 (4): one output after a read timeout used to be 2 generation requests."""
    for _ in range(2):
        gemini.script("generate", 200, {}, delay=1.0)
    b = backend(gemini, timeout=0.2, retries=3)
    with pytest.raises(OutcomeUnknown, match=r"no answer within 0.2 s.*may have started"):
        b.run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(gemini.requests) == 1


def test_dropped_connection_after_sending_is_not_resent(gemini: FakeGemini) -> None:
    gemini.script("generate", 200, {}, drop=True)
    with pytest.raises(OutcomeUnknown, match="connection failed after the request was sent"):
        backend(gemini, retries=3).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(gemini.requests) == 1


def test_daily_quota_is_a_configuration_fault_not_retried(gemini: FakeGemini) -> None:
    """Issue 21 (5): a 429 for a daily quota (limit: 0) was retried as transient."""
    gemini.daily_quota_used = True
    with pytest.raises(
        ConfigurationFault, match="(?s)quota of this key .* is used up or zero.*limit: 0"
    ):
        backend(gemini, retries=3).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(gemini.requests) == 1


def test_per_minute_quota_is_retried_after_retry_delay(gemini: FakeGemini) -> None:
    gemini.script("generate", 429, gemini_quota(PRO, per_day=False, delay="0.3s"))
    started = time.monotonic()
    result = backend(gemini).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert time.monotonic() - started >= 0.3 and result.info["outputs"][0]["attempts"] == 2


def test_asks_for_images_only_so_a_text_answer_cannot_happen(gemini: FakeGemini) -> None:
    """Issue 21 (5): TEXT+IMAGE let the model answer in words only: a paid, retried error."""
    result = backend(gemini).run(Request(images=[image()], prompt="chatty cup", seeds=[1]))
    assert result.images[0] is not None
    assert gemini.requests[0]["body"]["generationConfig"]["responseModalities"] == ["IMAGE"]


def test_an_answer_without_an_image_is_a_refusal_not_a_retry(gemini: FakeGemini) -> None:
    gemini.script(
        "generate",
        200,
        {
            "candidates": [{"content": {"parts": [{"text": "No."}]}, "finishReason": "NO_IMAGE"}],
            "responseId": "r-1",
        },
    )
    with pytest.raises(Refused, match="refused by gemini: no image .finishReason NO_IMAGE: No."):
        backend(gemini).run(Request(images=[image()], prompt="p", seeds=[1]))


@pytest.mark.parametrize("retired", sorted(GEMINI_RETIRED))
def test_retired_models_are_configuration_faults(gemini: FakeGemini, retired: str) -> None:
    """Issue 21 (1): the old ids answer 404 like the real API; the fault says how to fix it."""
    with pytest.raises(
        ConfigurationFault, match=f"does not know model {retired}.*profiles.<name>.model"
    ):
        backend(gemini, model=retired).run(Request(images=[image()], prompt="p", seeds=[1]))
    with pytest.raises(ConfigurationFault, match="NOT_FOUND"):
        check_model(backend(gemini, model=retired).spec)


def test_every_gemini_profile_names_a_current_model(gemini: FakeGemini) -> None:
    """Issue 21 (1): every nano-banana profile named a retired model."""
    names = [n for n, p in PROFILES.items() if p["task"] == "gemini-image"]
    assert names
    for name in names:
        model = PROFILES[name]["model"]
        assert model not in GEMINI_RETIRED, (name, model)
        found = check_model(backend(gemini, model=model).spec)
        assert found.verified and model in found.detail
        b = profile(name, f"{gemini.url}/v1beta", retries=0)
        size = PROFILES[name]["options"].get("default_size")
        result = b.run(Request(images=[image()], prompt="p", seeds=[1], params={"size": size}))
        assert result.images[0] is not None, name


def test_aspect_ratios_are_per_model(gemini: FakeGemini) -> None:
    flash = profile("nano-banana-2", f"{gemini.url}/v1beta")
    pro = profile("nano-banana-pro", f"{gemini.url}/v1beta")
    wide = Request(images=[image()], prompt="p", seeds=[1], params={"aspect_ratio": "8:1"})
    assert flash.run(wide).images[0] is not None
    with pytest.raises(
        InvalidRequest, match="aspect_ratio '8:1' is not one gemini-3-pro-image makes"
    ):
        pro.validate(wide)


def test_unknown_model_is_reported_as_such(gemini: FakeGemini) -> None:
    b = backend(gemini, model="gemini-9-banana")
    with pytest.raises(
        ConfigurationFault, match="gemini does not know model gemini-9-banana: .*NOT_FOUND"
    ):
        b.run(Request(images=[image()], prompt="p", seeds=[1]))
    assert len(gemini.requests) == 1  # not retried


def test_wrong_key_is_model_unavailable_and_never_leaks(
    gemini: FakeGemini, monkeypatch, caplog
) -> None:
    secret = "wrong-key-SECRET-value"
    monkeypatch.setenv("GEMINI_API_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ModelUnavailable, match="refused the API key.*API key not valid") as caught:
        backend(gemini).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert secret not in str(caught.value) and secret not in caplog.text
    assert len(gemini.requests) == 1


def test_a_key_echoed_by_the_provider_is_scrubbed(gemini: FakeGemini, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        gemini.script(
            "generate",
            429,
            {"error": {"status": "RESOURCE_EXHAUSTED", "message": f"bad {FakeGemini.key}"}},
        )
    with pytest.raises(BackendError) as caught:
        backend(gemini).run(Request(images=[image()], prompt="p", seeds=[1]))
    assert FakeGemini.key not in str(caught.value) and "bad ***" in str(caught.value)
    assert FakeGemini.key not in caplog.text and "bad ***" in caplog.text


def test_missing_key_names_the_env_var_and_credential(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(
        ModelUnavailable,
        match=r"set the environment variable GEMINI_API_KEY.*"
        r"LoadCredential=GEMINI_API_KEY",
    ):
        make("gemini-image", PRO, "http://127.0.0.1:9")


def test_a_request_whose_every_output_is_refused_fails_as_a_refusal(gemini: FakeGemini) -> None:
    with pytest.raises(Refused, match=r"refused by gemini: .*\(all 3 outputs refused\)"):
        backend(gemini, concurrency=2).run(
            Request(images=[image()], prompt="forbidden", seeds=[1, 2, 3])
        )


def test_one_refused_output_is_a_failed_variant_and_the_others_are_kept(gemini: FakeGemini) -> None:
    gemini.script(
        "generate",
        200,
        {
            "candidates": [
                {
                    "content": {"parts": [{"text": "I can't create that image."}]},
                    "finishReason": "IMAGE_SAFETY",
                    "index": 0,
                }
            ],
            "responseId": "resp-refused",
        },
    )
    result = backend(gemini, concurrency=1).run(
        Request(images=[image()], prompt="a cat", seeds=[1, 2, 3])
    )
    refused = [k for k, img in enumerate(result.images) if img is None]
    assert len(refused) == 1 and sum(img is not None for img in result.images) == 2
    info = result.info["outputs"][refused[0]]
    assert info["refusal"].startswith("refused by gemini:") and "IMAGE_SAFETY" in info["refusal"]
    assert info["cost"] == 0.0
