"""Provenance embedded in every output: what made this image, readable by people and tools.

    save_kwargs(fmt, info) -> dict     extra keyword arguments for ``PIL.Image.save``
    read(data) -> dict | None          what save_kwargs embedded (or None)
    parameters_text(info) -> str       the human "parameters" text (A1111's layout)

Where it goes:

- **PNG**: an iTXt chunk ``darkroom`` (the JSON), an iTXt chunk ``parameters`` in the layout
  AUTOMATIC1111 writes (prompt / ``Negative prompt:`` / ``Steps: 2, Seed: 42, ...``), and the same
  XMP packet as JPEG/WebP in the standard ``XML:com.adobe.xmp`` iTXt chunk.
- **JPEG / WebP**: an XMP packet (Pillow >= 11 writes it through ``save(xmp=...)``: JPEG APP1,
  WebP ``XMP `` chunk) in the ``darkroom`` namespace: ``darkroom:json`` holds the whole record;
  a few scalar properties (Prompt, Model, Seed, Rule, Step) are repeated so ``exiftool -XMP:all``
  shows them directly.

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

__all__ = ["NAMESPACE", "normalize", "parameters_text", "read", "save_kwargs", "xmp_packet"]

NAMESPACE = "https://darkroom.invalid/ns/provenance/1.0/"
PNG_KEY = "darkroom"
PNG_PARAMETERS = "parameters"
PNG_XMP = "XML:com.adobe.xmp"
_EXIF_IMAGE_DESCRIPTION = 0x010E
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


def xmp_packet(info: Mapping[str, Any]) -> bytes:
    """An XMP packet (UTF-8) in the darkroom namespace carrying ``info``."""
    record = json.dumps(normalize(info), sort_keys=True, ensure_ascii=False)
    scalars = "".join(
        f"<darkroom:{name}>{html.escape(str(info[key]), quote=False)}</darkroom:{name}>"
        for name, key in _XMP_SCALARS
        if info.get(key) is not None
    )
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:darkroom="{NAMESPACE}">'
        f"{scalars}<darkroom:json>{html.escape(record, quote=False)}</darkroom:json>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    )
    return packet.encode("utf-8")


def save_kwargs(fmt: str, info: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for ``image.save(buffer, fmt, **kwargs)`` that embed ``info``.

    ``fmt`` is Pillow's format name: "PNG", "JPEG" or "WEBP". Empty ``info`` gives ``{}``.
    Raises ValueError for another format, or a JPEG whose record exceeds one APP1 segment.
    """
    fmt = fmt.upper()
    if fmt not in ("PNG", "JPEG", "WEBP"):
        raise ValueError(f"no provenance writer for {fmt!r}; expected PNG, JPEG or WEBP")
    if not info:
        return {}
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
    """The provenance record embedded in an image file's bytes, or None if there is none.

    Unreadable or non-image data also gives None: callers decide what that means.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = dict(image.info)
            exif = image.getexif()
    except (OSError, ValueError, SyntaxError):
        return None
    found = _loads(info.get(PNG_KEY))
    if found is None:
        found = _from_xmp(info.get("xmp") or info.get(PNG_XMP))
    if found is None:  # outputs written before XMP: JSON in EXIF ImageDescription
        found = _loads(exif.get(_EXIF_IMAGE_DESCRIPTION))
    return found
