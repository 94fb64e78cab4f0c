"""Contract tests: Darkroom's requests and the fakes' answers against the providers' official SDKs.

The fakes and the backends were written from documentation; these tests make field drift fail
CI. They need the SDKs of the test-only extra ``hosted-contract`` (in ``test``):

- google-genai: every canned Gemini body is parsed by the SDK (its types forbid unknown
  fields); Darkroom's request is rebuilt as the SDK's ``GenerateContentConfig`` / ``Content``
  and sent by the SDK's own client to the fake, and the two wire bodies must be equal;
- byteplus-python-sdk-v2 (``byteplussdkarkruntime``): Darkroom's body is passed as keyword
  arguments to the SDK's ``images.generate`` (an unknown field is a TypeError) and the two
  wire bodies compared; the fake's answers are read back through the SDK;
- BFL: its SDK on PyPI (``blackforest`` 0.1.3) pins ``pillow==10.4.0`` and cannot be installed
  beside Darkroom, so the schema below is derived from its source (``FluxKontextProInputs``,
  ``GenericImageInput``, ``AsyncResponse``) plus the documented webhook fields and statuses.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict

from backends import Request
from tests.hosted.conftest import image, make, profile
from tests.hosted.fakes import (
    BFL_STATUSES,
    FakeArk,
    FakeBFL,
    FakeGemini,
    ark_error,
    ark_images,
    ark_withheld,
    b64bytes,
    bfl_result,
    bfl_submitted,
    gemini_blocked,
    gemini_image,
    gemini_key_invalid,
    gemini_not_found,
    gemini_quota,
    gemini_text_only,
    gemini_withheld,
)

MODEL = "gemini-3-pro-image"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _no_data(value: Any) -> Any:
    """``value`` with base64 payloads replaced (images are compared elsewhere) and keys in
    lowerCamel: proto3 JSON takes ``mime_type`` and ``mimeType`` alike, and google-genai
    itself sends ``inlineData.mime_type``."""
    if isinstance(value, dict):
        return {
            _camel(k): "<data>" if k in ("data", "image") and v else _no_data(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_no_data(v) for v in value]
    return value


# -- Gemini: google-genai ---------------------------------------------------------------------


def test_gemini_canned_answers_parse_as_sdk_types() -> None:
    types = pytest.importorskip("google.genai.types")
    errors = pytest.importorskip("google.genai.errors")
    for body in (
        gemini_image(MODEL, "r", (1, 2, 3)),
        gemini_blocked(MODEL, "r"),
        gemini_withheld(MODEL, "r"),
        gemini_withheld(MODEL, "r", "NO_IMAGE"),
        gemini_text_only(MODEL, "r"),
    ):
        parsed = types.GenerateContentResponse.model_validate(body)
        assert parsed.response_id == "r" and parsed.model_version == MODEL
    assert types.FinishReason("IMAGE_SAFETY") and types.BlockedReason("PROHIBITED_CONTENT")
    for code, body in (
        (404, gemini_not_found(MODEL)),
        (400, gemini_key_invalid()),
        (429, gemini_quota(MODEL, per_day=True)),
    ):
        error = errors.APIError(code, body)
        assert error.status == body["error"]["status"] and error.message == body["error"]["message"]


def test_gemini_request_is_what_the_sdk_sends(gemini: FakeGemini) -> None:
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    b = profile("nano-banana-pro", f"{gemini.url}/v1beta")
    b.run(
        Request(
            images=[image()],
            prompt="make it dusk",
            seeds=[5],
            params={"size": "2K", "aspect_ratio": "16:9"},
        )
    )
    ours = gemini.requests[-1]["body"]
    # Darkroom's JSON, read as the SDK's types (extra fields are errors there).
    config = types.GenerateContentConfig.model_validate(ours["generationConfig"])
    content = types.Content.model_validate(ours["contents"][0])
    assert config.response_modalities == ["IMAGE"] and config.image_config.image_size == "2K"
    client = genai.Client(
        api_key=FakeGemini.key,
        http_options=types.HttpOptions(base_url=gemini.url, api_version="v1beta"),
    )
    answer = client.models.generate_content(model=MODEL, contents=[content], config=config)
    sdk = gemini.requests[-1]
    assert sdk["path"] == f"/v1beta/models/{MODEL}:generateContent"
    assert _no_data(sdk["body"]) == _no_data(ours)
    assert b64bytes(sdk["body"]["contents"][0]["parts"][1]["inlineData"]["data"]) == b64bytes(
        ours["contents"][0]["parts"][1]["inlineData"]["data"]
    )
    assert answer.candidates[0].content.parts[0].inline_data.data[:4] == b"\x89PNG"
    model = client.models.get(model=MODEL)  # the look-up check_model uses
    assert model.name == f"models/{MODEL}" and "generateContent" in (model.supported_actions or [])


# -- Seedream: byteplus-python-sdk-v2 (byteplussdkarkruntime) -----------------------------------


def test_seedream_request_is_what_the_sdk_sends(ark: FakeArk) -> None:
    runtime = pytest.importorskip("byteplussdkarkruntime")
    make("seedream", "seedream-4-0-250828", f"{ark.url}/api/v3").run(
        Request(images=[image()], prompt="on marble", seeds=[1], params={"size": "2K"})
    )
    ours = ark.requests[-1]["body"]
    client = runtime.Ark(base_url=f"{ark.url}/api/v3", api_key=FakeArk.key, max_retries=0)
    answer = client.images.generate(**ours)  # a field the SDK does not know is a TypeError
    sdk = ark.requests[-1]["body"]
    assert {k: v for k, v in sdk.items() if v is not None} == ours
    assert answer.data[0].size == ours["size"] and answer.usage.generated_images == 1
    assert base64.b64decode(answer.data[0].b64_json)[:4] == b"\x89PNG"


def test_seedream_canned_answers_use_sdk_field_names(ark: FakeArk) -> None:
    images = pytest.importorskip("byteplussdkarkruntime.types.images.images")
    runtime = pytest.importorskip("byteplussdkarkruntime")
    fields = {
        name: set(cls.model_fields)
        for name, cls in (("image", images.Image), ("usage", images.Usage), ("error", images.Error))
    }
    for body in (ark_images("m", [(2048, 1536)], 1), ark_withheld("m")):
        assert set(body["usage"]) <= fields["usage"]
        for item in body["data"]:
            assert set(item) - {"error"} <= fields["image"]
            assert set(item.get("error") or {}) <= fields["error"]
    assert set(ark_error("X", "y")["error"]) <= {"code", "message", "param", "type"}
    client = runtime.Ark(base_url=f"{ark.url}/api/v3", api_key=FakeArk.key, max_retries=0)
    with pytest.raises(runtime._exceptions.ArkNotFoundError) as caught:
        client.images.generate(model="seedream-9", prompt="p", size="2048x2048")
    assert caught.value.code == "InvalidEndpointOrModel.NotFound"


# -- BFL: schema derived from the blackforest SDK's source ------------------------------------


class KontextInputs(BaseModel):
    """FluxKontextProInputs (+ GenericImageInput's generation fields) and the webhook fields."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    input_image: str | None = None
    input_image_2: str | None = None
    input_image_3: str | None = None
    input_image_4: str | None = None
    seed: int | None = None
    aspect_ratio: str | None = None
    output_format: Literal["png", "jpeg"] | None = "png"
    prompt_upsampling: bool = False
    safety_tolerance: int = 2
    webhook_url: str | None = None
    webhook_secret: str | None = None


class AsyncResponse(BaseModel):
    id: str
    polling_url: str


class ResultResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    status: Literal[BFL_STATUSES]  # type: ignore[valid-type]
    result: dict[str, Any] | None = None
    progress: float | None = None
    details: dict[str, Any] | None = None
    preview: dict[str, Any] | None = None


def test_bfl_request_and_answers_fit_the_sdk_schema(bfl: FakeBFL) -> None:
    bfl.polls_needed = 1
    b = make("bfl-kontext", "flux-kontext-pro", f"{bfl.url}/v1", poll_interval=0.01)
    b.run(
        Request(
            images=[image()],
            prompt="p",
            seeds=[3],
            references=[image()],
            params={"aspect_ratio": "16:9"},
        )
    )
    KontextInputs.model_validate(bfl.requests[0]["body"])
    AsyncResponse.model_validate(bfl_submitted("t", "https://api.us1.bfl.ai/v1/get_result?id=t"))
    for status in BFL_STATUSES:
        ResultResponse.model_validate(bfl_result("t", status))
    ResultResponse.model_validate(
        bfl_result("t", "Content Moderated", details={"Moderation Reasons": ["x"]})
    )
