"""Image metadata as template values: caption, title, keywords, creator, capture date, camera.

Read from the EXIF, IPTC (IIM) and XMP an image carries in its header, from the bytes intake
already holds (no pixel is decoded, no second read). Where several standards give the same
field, XMP wins over IPTC over EXIF (the Metadata Working Group's order). Every value is made
safe before a template sees it: control and invisible characters become spaces, whitespace is
collapsed, and it is capped at :data:`MAX_CHARS` characters. Templates render in one pass, so a
caption holding ``{stem}`` stays text; path and glob templates escape values further
(:mod:`daemon.rules.plan`).

In templates the fields are ``{meta.caption}``, ``{meta.keywords}``, ... (:data:`META_VARS`);
a field the image lacks is the empty string.
"""

from __future__ import annotations

import functools
import io
import re
import unicodedata
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# The fields, as ``{meta.NAME}``. ``description`` is another name for ``caption``; ``camera``
# is make and model together ("Apple iPhone 15 Pro").
META_FIELDS = (
    "caption",
    "description",
    "title",
    "keywords",
    "creator",
    "date",
    "camera_make",
    "camera_model",
    "camera",
)
META_VARS = tuple(f"meta.{name}" for name in META_FIELDS)
MAX_CHARS = 300  # per field: a 20 MB caption must not become a 20 MB prompt
MAX_XMP_BYTES = 256 * 1024  # XMP packets are a few KiB; more is not a caption
_SCAN_BYTES = 1024 * 1024  # where a packet Pillow does not expose is looked for

_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
}
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# EXIF tags (IFD0) and the Exif sub-IFD's DateTimeOriginal.
_EXIF_DESCRIPTION, _EXIF_ARTIST, _EXIF_MAKE, _EXIF_MODEL = 0x010E, 0x013B, 0x010F, 0x0110
_EXIF_XP_TITLE, _EXIF_XP_KEYWORDS, _EXIF_XP_SUBJECT = 0x9C9B, 0x9C9E, 0x9C9F
_EXIF_IFD, _EXIF_DATE_ORIGINAL, _EXIF_DATETIME = 0x8769, 0x9003, 0x0132
# IPTC IIM records (2:NN).
_IPTC_TITLE, _IPTC_KEYWORDS, _IPTC_DATE, _IPTC_CREATOR, _IPTC_CAPTION = (
    (2, 5),
    (2, 25),
    (2, 55),
    (2, 80),
    (2, 120),
)


@dataclass(frozen=True)
class ImageMetadata:
    """The metadata fields of one image, each already safe to put in a prompt."""

    caption: str = ""
    title: str = ""
    keywords: tuple[str, ...] = ()
    creator: str = ""
    date: str = ""  # the capture date, YYYY-MM-DD
    camera_make: str = ""
    camera_model: str = ""

    @property
    def camera(self) -> str:
        """Make and model, without saying the make twice ("Canon Canon EOS R5")."""
        if self.camera_model.lower().startswith(self.camera_make.lower()):
            return self.camera_model
        return clean(f"{self.camera_make} {self.camera_model}")

    def variables(self) -> dict[str, str]:
        """The template variables: ``{"meta.caption": ..., ...}`` (every field, "" if absent)."""
        values = {
            "caption": self.caption,
            "description": self.caption,
            "title": self.title,
            "keywords": clean(", ".join(self.keywords)),
            "creator": self.creator,
            "date": self.date,
            "camera_make": self.camera_make,
            "camera_model": self.camera_model,
            "camera": self.camera,
        }
        return {f"meta.{name}": values[name] for name in META_FIELDS}


EMPTY = ImageMetadata()


def empty_variables() -> dict[str, str]:
    """Every ``meta.*`` variable, empty: for a plan made without reading metadata."""
    return dict(_empty_variables())


@functools.cache
def _empty_variables() -> dict[str, str]:
    return EMPTY.variables()  # the same for every plan of a burst: made once


def clean(value: Any) -> str:
    """``value`` as one safe line: control/invisible characters become spaces, whitespace is
    collapsed, and the result is capped at MAX_CHARS characters."""
    if isinstance(value, bytes):
        value = _text(value)
    text = "".join(
        " " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
        for c in str(value)[: MAX_CHARS * 4]
    )
    text = " ".join(text.split())
    return text[:MAX_CHARS].rstrip()


def read_metadata(data: bytes) -> ImageMetadata:
    """The metadata in ``data``'s header (EXIF, IPTC, XMP); empty fields where there is none.
    Never raises: metadata that cannot be read is metadata the image does not have."""
    from PIL import Image

    from daemon.outputs import openers

    openers.register()  # HEIC's EXIF and XMP come through its plugin
    exif: dict[str, Any] = {}
    iptc: dict[str, Any] = {}
    xmp: dict[str, Any] = {}
    packet: bytes | None = None
    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = _exif(image)
            iptc = _iptc(image)
            raw = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
            if raw:
                packet = raw.encode() if isinstance(raw, str) else bytes(raw)
    except Exception:  # not an image Pillow reads: look for a packet all the same
        pass
    if packet is None:
        packet = _find_packet(data)
    if packet is not None:
        xmp = _xmp(packet)

    def first(*values: Any) -> str:
        for value in values:
            if isinstance(value, (list, tuple)):
                value = ", ".join(clean(v) for v in value if clean(v))
            text = clean(value) if value else ""
            if text:
                return text
        return ""

    keywords: list[Any] = next(
        (k for k in (xmp.get("keywords"), iptc.get("keywords"), exif.get("keywords")) if k),
        [],
    )
    return ImageMetadata(
        caption=first(xmp.get("caption"), iptc.get("caption"), exif.get("caption")),
        title=first(xmp.get("title"), iptc.get("title"), exif.get("title")),
        keywords=tuple(dict.fromkeys(k for k in (clean(v) for v in keywords) if k))[:50],
        creator=first(xmp.get("creator"), iptc.get("creator"), exif.get("creator")),
        date=_date(first(xmp.get("date"), iptc.get("date"), exif.get("date"))),
        camera_make=first(xmp.get("make"), exif.get("make")),
        camera_model=first(xmp.get("model"), exif.get("model")),
    )


def _text(raw: bytes) -> str:
    """Bytes of a text field: UTF-8 when they are, else Latin-1 (old cameras and IIM)."""
    raw = raw.rstrip(b"\x00")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _xp(raw: Any) -> str:
    """A Windows ``XP*`` tag: UTF-16LE bytes (Pillow may hand them as a tuple of ints)."""
    if isinstance(raw, tuple):
        raw = bytes(raw)
    if isinstance(raw, bytes):
        return raw.decode("utf-16-le", "replace").rstrip("\x00")
    return str(raw)


def _exif(image: Any) -> dict[str, Any]:
    from PIL import Image

    try:
        # The base class's getexif reads only what the header parse found (PNG's override
        # would decode every pixel to look for a late eXIf chunk).
        exif = Image.Image.getexif(image)
    except Exception:
        return {}
    out: dict[str, Any] = {
        "caption": exif.get(_EXIF_DESCRIPTION),
        "creator": exif.get(_EXIF_ARTIST),
        "make": exif.get(_EXIF_MAKE),
        "model": exif.get(_EXIF_MODEL),
    }
    if exif.get(_EXIF_XP_TITLE) is not None:
        out["title"] = _xp(exif.get(_EXIF_XP_TITLE))
    if exif.get(_EXIF_XP_SUBJECT) is not None and not out["caption"]:
        out["caption"] = _xp(exif.get(_EXIF_XP_SUBJECT))
    if exif.get(_EXIF_XP_KEYWORDS) is not None:
        out["keywords"] = _xp(exif.get(_EXIF_XP_KEYWORDS)).split(";")
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        sub = {}
    out["date"] = sub.get(_EXIF_DATE_ORIGINAL) or exif.get(_EXIF_DATETIME)
    return out


def _iptc(image: Any) -> dict[str, Any]:
    from PIL import IptcImagePlugin

    try:
        info = IptcImagePlugin.getiptcinfo(image) or {}
    except Exception:
        return {}

    def values(key: tuple[int, int]) -> list[str]:
        raw = info.get(key)
        if raw is None:
            return []
        items = raw if isinstance(raw, list) else [raw]
        return [_text(item) if isinstance(item, bytes) else str(item) for item in items]

    return {
        "caption": values(_IPTC_CAPTION)[:1],
        "title": values(_IPTC_TITLE)[:1],
        "keywords": values(_IPTC_KEYWORDS),
        "creator": values(_IPTC_CREATOR),
        "date": values(_IPTC_DATE)[:1],
    }


def _find_packet(data: bytes) -> bytes | None:
    head = data[:_SCAN_BYTES]
    start = head.find(b"<x:xmpmeta")
    if start < 0:
        return None
    end = head.find(b"</x:xmpmeta>", start)
    return head[start : end + len(b"</x:xmpmeta>")] if end > 0 else None


def _xmp(packet: bytes) -> dict[str, Any]:
    """The fields of an XMP packet. A packet with a DTD or entities is refused unread (XMP
    never has one; it is how XML bombs are made), as is one over MAX_XMP_BYTES."""
    if len(packet) > MAX_XMP_BYTES or b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:
        return {}
    start = packet.find(b"<x:xmpmeta")
    end = packet.rfind(b"</x:xmpmeta>")
    if start >= 0 and end > start:
        packet = packet[start : end + len(b"</x:xmpmeta>")]
    # XML forbids control characters; a writer that let one through loses one character,
    # not the whole packet.
    packet = re.sub(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]", b" ", packet)
    try:
        root = ElementTree.fromstring(packet)
    except ElementTree.ParseError:
        return {}
    found: dict[str, Any] = {}
    wanted = {
        f"{{{_NS['dc']}}}description": "caption",
        f"{{{_NS['dc']}}}title": "title",
        f"{{{_NS['photoshop']}}}Headline": "headline",
        f"{{{_NS['dc']}}}subject": "keywords",
        f"{{{_NS['dc']}}}creator": "creator",
        f"{{{_NS['photoshop']}}}DateCreated": "date",
        f"{{{_NS['exif']}}}DateTimeOriginal": "date_original",
        f"{{{_NS['xmp']}}}CreateDate": "create_date",
        f"{{{_NS['tiff']}}}Make": "make",
        f"{{{_NS['tiff']}}}Model": "model",
    }
    for description in root.iter(f"{{{_NS['rdf']}}}Description"):
        for attribute, value in description.attrib.items():  # the short form: name="value"
            if attribute in wanted:
                found.setdefault(wanted[attribute], value)
        for child in description:
            if child.tag in wanted:
                found.setdefault(wanted[child.tag], _xmp_value(child))
    found.setdefault("title", found.get("headline"))
    found["date"] = found.get("date_original") or found.get("date") or found.get("create_date")
    if isinstance(found.get("keywords"), str):
        found["keywords"] = [found["keywords"]]
    return found


def _xmp_value(element: ElementTree.Element) -> str | list[str]:
    """A property's value: its text, or its rdf:Alt (x-default first), Bag or Seq items."""
    for container in ("Alt", "Bag", "Seq"):
        holder = element.find(f"rdf:{container}", _NS)
        if holder is None:
            continue
        items = holder.findall("rdf:li", _NS)
        if container == "Alt":
            default = [li for li in items if li.get(_XML_LANG) == "x-default"]
            return (default or items)[0].text or "" if items else ""
        return [li.text or "" for li in items]
    return element.text or ""


def _date(text: str) -> str:
    """A capture date as YYYY-MM-DD (EXIF "2024:05:01 10:00", XMP "2024-05-01T10:00",
    IPTC "20240501"); "" when it is not a date."""
    match = re.match(r"(\d{4})[:\-]?(\d{2})[:\-]?(\d{2})", text)
    if not match:
        return ""
    year, month, day = match.groups()
    if not ("01" <= month <= "12" and "01" <= day <= "31"):
        return ""
    return f"{year}-{month}-{day}"


def uses_metadata(names: Iterable[str]) -> bool:
    """Whether template variable ``names`` include a metadata field (worth reading it)."""
    return any(name.startswith("meta.") for name in names)
