"""Image metadata in templates: EXIF, IPTC and XMP fields of the photo itself, read once at
intake from its header, rendered safely into prompts and paths."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from daemon.rules.metadata import MAX_CHARS, read_metadata

PROMPT = (
    "{meta.caption} | {meta.title} | {meta.keywords} | {meta.creator} | {meta.date} | {meta.camera}"
)


def xmp_packet(caption: str, title: str, keywords: list[str], creator: str) -> bytes:
    items = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
        ' photoshop:DateCreated="2024-06-02T09:30:00">'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{caption}</rdf:li>'
        "</rdf:Alt></dc:description>"
        f'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{title}</rdf:li></rdf:Alt></dc:title>'
        f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>"
        f"<dc:creator><rdf:Seq><rdf:li>{creator}</rdf:li></rdf:Seq></dc:creator>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def camera_exif(make: str = "Apple", model: str = "iPhone 15 Pro") -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = model
    exif[0x010E] = "the exif description"
    exif.get_ifd(0x8769)[0x9003] = "2023:01:02 03:04:05"
    return exif


def save_photo(path: Path, fmt: str, *, xmp: bytes | None, exif: Image.Exif | None) -> Path:
    image = Image.new("RGB", (64, 48), (180, 120, 60))
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {}
    if exif is not None:
        kwargs["exif"] = exif if fmt != "HEIF" else exif.tobytes()
    if xmp is not None:
        kwargs["xmp"] = xmp
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    image.save(path, fmt, **kwargs)
    return path


RULE = f"""\
name: meta
match: {{source: drop}}
prompt: "{PROMPT}"
steps: [{{name: one, model: stub, seeds: [1]}}]
output: {{sink: out, path: "{{rule}}/{{meta.camera}}/{{stem}}/{{step}}-{{variant}}.png"}}
"""


def test_exif_and_xmp_fields_fill_the_prompt_and_the_path(harness):
    harness.rule("m.yaml", RULE)
    harness.start()
    packet = xmp_packet("A red chair by the window", "Red chair", ["chair", "oak"], "Ana Lima")
    save_photo(harness.drop / "chair.jpg", "JPEG", xmp=packet, exif=camera_exif())
    save_photo(harness.drop / "bare.png", "PNG", xmp=None, exif=None)
    m = harness.manifest("meta", "chair", where="meta/Apple iPhone 15 Pro/chair/manifest.json")
    assert m["status"] == "done"
    assert m["steps"][0]["prompt"] == (
        "A red chair by the window | Red chair | chair, oak | Ana Lima | 2024-06-02"
        " | Apple iPhone 15 Pro"
    )
    bare = harness.manifest("meta", "bare", where="meta/bare/manifest.json")
    assert bare["status"] == "done"
    assert bare["steps"][0]["prompt"] == " |  |  |  |  | "  # absent fields are empty


def test_a_phone_heic_carries_its_caption_and_camera(harness):
    harness.rule("m.yaml", RULE.replace("{meta.camera}/", ""))
    harness.start()
    packet = xmp_packet("Sunset over the harbour", "Harbour", ["sea"], "Jo")
    save_photo(harness.drop / "IMG_0001.HEIC", "HEIF", xmp=packet, exif=camera_exif())
    m = harness.manifest("meta", "IMG_0001", where="meta/IMG_0001/manifest.json")
    assert m["status"] == "done", m["steps"][0]["error"]
    assert m["steps"][0]["prompt"] == (
        "Sunset over the harbour | Harbour | sea | Jo | 2024-06-02 | Apple iPhone 15 Pro"
    )


def test_hostile_metadata_is_text_one_line_and_capped(harness):
    harness.rule(
        "m.yaml",
        RULE.replace(PROMPT, "{meta.caption} / {meta.title}").replace(
            "{meta.camera}", "{meta.title}"
        ),
    )
    harness.start()
    caption = "evil {stem} {x.__class__} {{ line\u2028two\x1bthree\u202e " + "y" * 5000
    packet = xmp_packet(caption, "../../etc/pa*sswd", [], "")
    save_photo(harness.drop / "bad.jpg", "JPEG", xmp=packet, exif=None)
    m = harness.wait(
        lambda: next(iter(harness.out.rglob("manifest.json")), None), what="the manifest"
    )
    import json

    manifest = json.loads(Path(m).read_text())
    assert manifest["status"] == "done"
    prompt = manifest["steps"][0]["prompt"]
    # Braces stay text (rendering is one pass), control and bidi characters are gone, and
    # the caption is capped.
    assert prompt.startswith("evil {stem} {x.__class__} {{ line two three ")
    assert len(prompt.split(" / ")[0]) == MAX_CHARS
    assert prompt.endswith(" / ../../etc/pa*sswd")
    # In a path the title is one harmless folder name inside the sink.
    assert Path(m).resolve().is_relative_to(harness.out.resolve())
    assert Path(m).parent.parent.name == ".._.._etc_pa*sswd"


def test_iptc_caption_and_keywords_are_read():
    from PIL import JpegImagePlugin  # noqa: F401  (registers JPEG)

    def record(number: int, text: str) -> bytes:
        data = text.encode()
        return b"\x1c\x02" + bytes([number]) + len(data).to_bytes(2, "big") + data

    iptc = record(120, "IPTC caption") + record(25, "red") + record(25, "blue")
    resource = b"8BIM\x04\x04\x00\x00" + len(iptc).to_bytes(4, "big") + iptc
    app13 = b"Photoshop 3.0\x00" + resource
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG")
    data = buffer.getvalue()
    segment = b"\xff\xed" + (len(app13) + 2).to_bytes(2, "big") + app13
    data = data[:2] + segment + data[2:]
    meta = read_metadata(data).variables()
    assert meta["meta.caption"] == "IPTC caption"
    assert meta["meta.keywords"] == "red, blue"


def test_only_documented_metadata_names_are_template_fields():
    import pytest

    from daemon.rules import templates
    from daemon.rules.schema import SOURCE_VARS

    assert templates.fields("{meta.caption} {meta.camera}") == ["meta.caption", "meta.camera"]
    templates.check("{meta.keywords}", SOURCE_VARS)
    for bad in ("{meta.__class__}", "{meta.caption.upper}", "{meta[0]}", "{x.caption}"):
        with pytest.raises(templates.TemplateError):
            templates.fields(bad)
    with pytest.raises(templates.TemplateError, match="unknown variable"):
        templates.check("{meta.secret}", SOURCE_VARS)


def test_an_xml_bomb_in_xmp_is_ignored_not_expanded():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>'
    )
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG", xmp=bomb)
    assert read_metadata(buffer.getvalue()).variables()["meta.caption"] == ""


def test_match_shows_the_prompt_with_the_photos_metadata(tmp_path: Path) -> None:
    """``darkroom match`` renders ``{meta.*}`` the way the daemon will (no model loaded)."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "m.yaml").write_text(
        'name: meta\nmatch: {source: drop}\nprompt: "{meta.caption} by {meta.creator}"\n'
        "steps: [{name: one, model: stub, seeds: [1]}]\noutput: {sink: out}\n"
    )
    (tmp_path / "darkroom.yaml").write_text(
        "state_dir: state\nsources: {drop: {path: drop}}\nsinks: {out: {path: out}}\n"
    )
    packet = xmp_packet("A red chair", "Red chair", ["chair"], "Ana Lima")
    photo = save_photo(tmp_path / "drop" / "chair.jpg", "JPEG", xmp=packet, exif=None)
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "match", "--json", str(photo)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (rule,) = json.loads(result.stdout)["rules"]
    assert rule["steps"][0]["prompt"] == "A red chair by Ana Lima"
