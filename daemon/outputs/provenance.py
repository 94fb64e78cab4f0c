"""Provenance embedded in every output: what made this image, readable by people and tools.

    save_kwargs(fmt, info) -> dict     extra keyword arguments for ``PIL.Image.save``
    read(data) -> dict | None          what save_kwargs embedded (or None)
    parameters_text(info) -> str       the human "parameters" text (A1111's layout)
    digital_source_type(task, ...)     the IPTC Digital Source Type an output declares

Where it goes:

- **PNG**: an iTXt chunk ``darkroom`` (the JSON), an iTXt chunk ``parameters`` in the layout
  AUTOMATIC1111 writes (prompt / ``Negative prompt:`` / ``Steps: 2, Seed: 42, ...``), and the same
  XMP packet as JPEG/WebP in the standard ``XML:com.adobe.xmp`` iTXt chunk.
- **JPEG / WebP**: an XMP packet (Pillow >= 11 writes it through ``save(xmp=...)``: JPEG APP1,
  WebP ``XMP `` chunk) in the ``darkroom`` namespace: ``darkroom:json`` holds the whole record;
  a few scalar properties (Prompt, Model, Seed, Rule, Step) are repeated so ``exiftool -XMP:all``
  shows them directly.
- **Every format**: the IPTC Digital Source Type (``Iptc4xmpExt:DigitalSourceType``, the
  "made by AI" label Google, Meta and Adobe read) when ``info["digital_source_type"]`` is set:
  ``trainedAlgorithmicMedia`` for an image made from text alone, ``compositeWithTrained
  AlgorithmicMedia`` for one a model made from a photo (img2img, edit, inpaint, references).
- **GIF** (animated outputs): Pillow writes no XMP there, so the JSON goes in the comment
  extension. Videos (mp4) carry the record in their container metadata (backends.video_io).
- **C2PA** (optional, ``outputs.c2pa``): a signed Content Credentials manifest declaring the
  same digital source type, added after encoding (:mod:`daemon.outputs.c2pa`); :func:`read`
  summarises it under ``c2pa``.

``info`` is the dict the runner builds (flat keys: prompt, negative_prompt, model, model_id,
model_revision, profile, seed, steps, strength, guidance, darkroom_version, source_sha256, rule,
step, provider, request_id; ``params`` may hold steps/strength/guidance instead). It is stored as
JSON, so :func:`read` returns ``json.loads(json.dumps(info))`` — exactly what was written, with
tuples as lists. Older outputs stored the JSON in EXIF ImageDescription: :func:`read` still finds it.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Mapping
from typing import Any

from PIL import Image, PngImagePlugin

__all__ = [
    "COMPOSITE_WITH_AI",
    "DIGITAL_SOURCE_TYPES",
    "NAMESPACE",
    "TRAINED_ALGORITHMIC_MEDIA",
    "digital_source_type",
    "normalize",
    "parameters_text",
    "read",
    "save_kwargs",
    "xmp_packet",
]

NAMESPACE = "https://darkroom.invalid/ns/provenance/1.0/"
PNG_KEY = "darkroom"
PNG_PARAMETERS = "parameters"
PNG_XMP = "XML:com.adobe.xmp"
_EXIF_IMAGE_DESCRIPTION = 0x010E
IPTC_EXT_NAMESPACE = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
# IPTC NewsCodes "Digital Source Type" (https://cv.iptc.org/newscodes/digitalsourcetype/).
_DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED_ALGORITHMIC_MEDIA = _DIGITAL_SOURCE_TYPE + "trainedAlgorithmicMedia"
COMPOSITE_WITH_AI = _DIGITAL_SOURCE_TYPE + "compositeWithTrainedAlgorithmicMedia"
DIGITAL_SOURCE_TYPES = (TRAINED_ALGORITHMIC_MEDIA, COMPOSITE_WITH_AI)
# Tasks that run no model (the pixels are the input's, resized or watermarked): they claim
# nothing of their own about how the image was made.
NO_MODEL_TASKS = frozenset({"rendition"})
# JPEG APP1 holds at most 65,533 bytes of which the XMP header takes 29.
_MAX_JPEG_XMP = 65_000

# Scalar properties repeated in XMP for tools; (XMP name, key in info).
_XMP_SCALARS = (
    ("Prompt", "prompt"),
    ("NegativePrompt", "negative_prompt"),
    ("Model", "model"),
    ("ModelId", "model_id"),
    ("Seed", "seed"),
    ("Rule", "rule"),
    ("Step", "step"),
    ("Version", "darkroom_version"),
)


def normalize(info: Mapping[str, Any]) -> dict[str, Any]:
    """``info`` as :func:`read` will return it (a JSON round trip; unknown types become str)."""
    return json.loads(json.dumps(dict(info), sort_keys=True, default=str))


def _param(info: Mapping[str, Any], *names: str) -> Any:
    given = info.get("params")
    params: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    for name in names:
        for where in (info, params):
            if where.get(name) is not None:
                return where[name]
    return None


def parameters_text(info: Mapping[str, Any]) -> str:
    """A1111-style text: prompt, ``Negative prompt: ...``, then ``Key: value`` pairs."""
    fields = [
        ("Steps", _param(info, "steps", "num_inference_steps")),
        ("CFG scale", _param(info, "guidance", "guidance_scale", "cfg_scale")),
        ("Seed", info.get("seed")),
        ("Denoising strength", _param(info, "strength")),
        ("Model", info.get("model") or info.get("profile")),
        ("Model id", info.get("model_id")),
        ("Model revision", _param(info, "model_revision", "revision")),
        ("Provider", info.get("provider")),
        ("Request id", info.get("request_id")),
        ("Rule", info.get("rule")),
        ("Step", info.get("step")),
        ("Source sha256", info.get("source_sha256")),
        ("Darkroom", info.get("darkroom_version")),
    ]
    lines = [str(info.get("prompt") or "")]
    if info.get("negative_prompt"):
        lines.append(f"Negative prompt: {info['negative_prompt']}")
    pairs = [f"{k}: {str(v).replace(',', ' ')}" for k, v in fields if v is not None and v != ""]
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def digital_source_type(
    task: str, *, from_image: bool, input_type: str | None = None
) -> str | None:
    """The IPTC Digital Source Type an output of ``task`` declares (a NewsCodes URI), or None.

    ``from_image``: the model was given an image (the arriving photo or an earlier step's
    output); False for text-to-image. ``input_type``: that image's own type, when known
    (None for a photo).

    - no model (a rendition): the input's type: None for a photo (resizing claims nothing),
      the earlier step's type for a rendition of a model's output;
    - a model given no image, or an image made from text alone: trainedAlgorithmicMedia;
    - a model given a photo (img2img, edit, inpaint, fill, references, image-to-video,
      upscale): compositeWithTrainedAlgorithmicMedia.
    """
    if task in NO_MODEL_TASKS:
        return input_type
    if not from_image or input_type == TRAINED_ALGORITHMIC_MEDIA:
        return TRAINED_ALGORITHMIC_MEDIA
    return COMPOSITE_WITH_AI


def xmp_packet(info: Mapping[str, Any]) -> bytes:
    """An XMP packet (UTF-8) in the darkroom namespace carrying ``info`` (and the IPTC
    Digital Source Type when ``info["digital_source_type"]`` names one)."""
    record = json.dumps(normalize(info), sort_keys=True, ensure_ascii=False)
    scalars = "".join(
        f"<darkroom:{name}>{html.escape(str(info[key]), quote=False)}</darkroom:{name}>"
        for name, key in _XMP_SCALARS
        if info.get(key) is not None
    )
    source_type = info.get("digital_source_type")
    iptc = (
        f"<Iptc4xmpExt:DigitalSourceType>{html.escape(source_type, quote=False)}"
        "</Iptc4xmpExt:DigitalSourceType>"
        if isinstance(source_type, str) and source_type
        else ""
    )
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:darkroom="{NAMESPACE}"'
        f' xmlns:Iptc4xmpExt="{IPTC_EXT_NAMESPACE}">'
        f"{iptc}{scalars}<darkroom:json>{html.escape(record, quote=False)}</darkroom:json>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    )
    return packet.encode("utf-8")


def save_kwargs(fmt: str, info: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for ``image.save(buffer, fmt, **kwargs)`` that embed ``info``.

    ``fmt`` is Pillow's format name: "PNG", "JPEG", "WEBP" or "GIF". Empty ``info`` gives
    ``{}``. Raises ValueError for another format, or a JPEG whose record exceeds one APP1
    segment.
    """
    fmt = fmt.upper()
    if fmt not in ("PNG", "JPEG", "WEBP", "GIF"):
        raise ValueError(f"no provenance writer for {fmt!r}; expected PNG, JPEG, WEBP or GIF")
    if not info:
        return {}
    if fmt == "GIF":  # no XMP writer for GIF in Pillow: the JSON goes in the comment
        return {"comment": json.dumps(normalize(info), sort_keys=True, ensure_ascii=False)}
    xmp = xmp_packet(info)
    if fmt == "PNG":
        png = PngImagePlugin.PngInfo()
        png.add_itxt(PNG_KEY, json.dumps(normalize(info), sort_keys=True, ensure_ascii=False))
        png.add_itxt(PNG_PARAMETERS, parameters_text(info))
        png.add_itxt(PNG_XMP, xmp.decode("utf-8"))
        return {"pnginfo": png}
    if fmt == "JPEG" and len(xmp) > _MAX_JPEG_XMP:
        raise ValueError(
            f"provenance is {len(xmp)} bytes of XMP; a JPEG APP1 segment holds {_MAX_JPEG_XMP}"
        )
    return {"xmp": xmp}


_JSON_ELEMENT = re.compile(rb"<darkroom:json>(.*?)</darkroom:json>", re.S)


def _from_xmp(xmp: bytes | str | None) -> dict[str, Any] | None:
    if not xmp:
        return None
    raw = xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)
    # Only our own element is read (no XML parser: no entity expansion, no DOCTYPE surprises).
    match = _JSON_ELEMENT.search(raw)
    if not match:
        return None
    return _loads(html.unescape(match.group(1).decode("utf-8", "replace")))


def _loads(text: Any) -> dict[str, Any] | None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read(data: bytes) -> dict[str, Any] | None:
    """The provenance record embedded in an image or video file's bytes, or None if there is
    none (an mp4's comes from its container metadata). An image signed with C2PA Content
    Credentials (``outputs.c2pa``) also gets a ``c2pa`` key: :func:`daemon.outputs.c2pa.summary`.

    Unreadable or non-image data also gives None: callers decide what that means.
    """
    if data[4:8] == b"ftyp" and not _is_still_image(data):
        from backends.video_io import read_mp4_tags

        return _loads(read_mp4_tags(data).get("comment"))
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = dict(image.info)
            exif = image.getexif()
    except (OSError, ValueError, SyntaxError):
        return None
    found = _loads(info.get(PNG_KEY))
    if found is None and image.format == "GIF":
        found = _loads(info.get("comment"))
    if found is None:
        found = _from_xmp(info.get("xmp") or info.get(PNG_XMP))
    if found is None:  # outputs written before XMP: JSON in EXIF ImageDescription
        found = _loads(exif.get(_EXIF_IMAGE_DESCRIPTION))
    if found is not None:
        from daemon.outputs import c2pa

        signed = c2pa.summary(data)  # None (and no import) for a file without a manifest
        if signed is not None:
            found["c2pa"] = signed
    return found


# ISO base media brands of still images (HEIF/AVIF share the box format with mp4).
_STILL_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")


def _is_still_image(data: bytes) -> bool:
    return data[8:12] in _STILL_BRANDS
