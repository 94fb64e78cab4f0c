"""C2PA Content Credentials on output images: sign them, and read a signed file back.

Optional: needs the ``c2pa-python`` package (``pip install 'darkroom[c2pa]'``), imported only
here and only when signing is configured or a file carries a manifest. Signing is offline:
the certificate chain and key are local files, and no timestamp authority is asked unless
``timestamp_url`` is set.

    credentials = ContentCredentials.load(cert, key)      # ConfigError says what is wrong
    signed = credentials.sign(data, "image/png", record, title="explore-0.png")
    summary(signed)   # {"validation_state": "Valid", "digital_source_type": ..., ...}

The manifest declares one ``c2pa.actions`` assertion: ``c2pa.created`` with the IPTC
digital source type of the record (``trainedAlgorithmicMedia`` for an image made from text,
``compositeWithTrainedAlgorithmicMedia`` for one a model made from a photo) and Darkroom as
the software agent; the claim generator is Darkroom and its version. The XMP record that
:mod:`daemon.outputs.provenance` embeds stays in the file (the manifest is added beside it).
Thumbnails are not embedded (they would add ~25 KB to every output). Outputs no model made
(renditions: the source resized or watermarked) declare no digital source type and are not
signed: C2PA requires one on ``c2pa.created``, and claiming "created" would be false.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.errors import ConfigError, EnvironmentFault, Problem

__all__ = [
    "ALGORITHMS",
    "ContentCredentials",
    "has_manifest",
    "media_type",
    "summary",
]

ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")
SIGNED_TYPES = ("image/png", "image/jpeg", "image/webp")
_DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
INSTALL = "pip install 'darkroom[c2pa]' (the c2pa-python package)"
_DOCS = "docs/rules.md#c2pa-content-credentials"


def _library() -> Any:
    try:
        import c2pa
    except ImportError as exc:
        raise ConfigError(
            [
                Problem(
                    "outputs.c2pa",
                    f"signing outputs needs the c2pa-python package, which is not installed ({exc})",
                    INSTALL,
                )
            ]
        ) from None
    return c2pa


def media_type(data: bytes) -> str | None:
    """The media type of an output's bytes, for the formats C2PA can carry here."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return None


def has_manifest(data: bytes) -> bool:
    """Whether the bytes hold a C2PA manifest store (a JUMBF box labelled ``c2pa``): cheap,
    so a file without one never loads the library."""
    return b"jumb" in data and b"c2pa" in data


class ContentCredentials:
    """A certificate chain and key that sign outputs. Built once, at start: :meth:`load`
    proves the pair signs (a wrong key, an expired or unusable certificate fail there, not
    on the first output)."""

    def __init__(
        self, chain: bytes, key: bytes, alg: str = "es256", timestamp_url: str | None = None
    ) -> None:
        self._c2pa = _library()
        if alg not in ALGORITHMS:
            raise ConfigError(
                [Problem("outputs.c2pa.alg", f"unknown algorithm {alg!r}", ", ".join(ALGORITHMS))]
            )
        self.alg = alg
        self.timestamp_url = timestamp_url
        self._chain, self._key = chain, key
        self._lock = threading.Lock()  # one native signer handle per call; calls serialised

    @classmethod
    def load(
        cls, cert: Path, key: Path, alg: str = "es256", timestamp_url: str | None = None
    ) -> ContentCredentials:
        """Read ``cert`` (PEM chain, signing certificate first) and ``key`` (PEM private key)
        and sign a probe image with them; ConfigError naming the file and the fix."""
        files = {}
        for name, path in (("cert", cert), ("key", key)):
            try:
                files[name] = Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    [
                        Problem(
                            f"outputs.c2pa.{name}",
                            f"cannot read {path}: {exc.strerror or type(exc).__name__}",
                            f"a PEM file the daemon's user can read ({_DOCS})",
                        )
                    ]
                ) from None
        credentials = cls(files["cert"], files["key"], alg, timestamp_url)
        _check_validity(files["cert"], cert)
        probe = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (8, 8)).save(probe, "PNG")
        try:
            credentials.sign(
                probe.getvalue(),
                "image/png",
                {"digital_source_type": _DIGITAL_SOURCE_TYPE + "trainedAlgorithmicMedia"},
            )
        except EnvironmentFault as exc:
            raise ConfigError(
                [
                    Problem(
                        f"outputs.c2pa: {cert} + {key}",
                        f"cannot sign with this certificate and key: {exc}",
                        f"the key must be the certificate's, the chain PEM with the signing "
                        f"certificate first, the algorithm {alg} the key's ({_DOCS})",
                    )
                ]
            ) from None
        return credentials

    def sign(
        self,
        data: bytes,
        content_type: str,
        record: Mapping[str, Any] | None,
        *,
        title: str | None = None,
    ) -> bytes:
        """``data`` with a signed C2PA manifest for ``record`` (the provenance record the file
        already carries). Other media types, and outputs no model made (a record without a
        digital source type: renditions), come back unchanged. A signing failure is the
        environment's (the certificate, the key, a timestamp server): EnvironmentFault."""
        if content_type not in SIGNED_TYPES or not (record or {}).get("digital_source_type"):
            return data
        c2pa = self._c2pa
        definition = manifest_definition(record, title)
        out = io.BytesIO()
        try:
            with self._lock:
                info = c2pa.C2paSignerInfo(
                    self.alg.encode(),
                    self._chain,
                    self._key,
                    self.timestamp_url.encode() if self.timestamp_url else None,
                )
                signer = c2pa.Signer.from_info(info)
                settings = c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}})
                with c2pa.Builder(definition, c2pa.Context(settings)) as builder:
                    builder.sign(signer, content_type, io.BytesIO(data), out)
        except c2pa.C2paError as exc:
            raise EnvironmentFault(f"C2PA signing failed: {exc}") from None
        return out.getvalue()


def manifest_definition(record: Mapping[str, Any] | None, title: str | None) -> dict[str, Any]:
    """The manifest Darkroom signs for an output whose provenance record is ``record``."""
    record = record or {}
    action: dict[str, Any] = {
        "action": "c2pa.created",
        "softwareAgent": {"name": "Darkroom", "version": __version__},
    }
    source_type = record.get("digital_source_type")
    if source_type:
        action["digitalSourceType"] = str(source_type)
    said = [f"{k} {record[k]}" for k in ("model_id", "model", "rule", "step") if record.get(k)]
    if said:
        action["description"] = "made by Darkroom: " + ", ".join(said)
    definition: dict[str, Any] = {
        "claim_generator_info": [{"name": "Darkroom", "version": __version__}],
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
    }
    if title:
        definition["title"] = title.rsplit("/", 1)[-1]
    return definition


def summary(data: bytes) -> dict[str, Any] | None:
    """What a file's C2PA manifest says (None when it has none): the validation state
    (``Valid``: intact and signed; ``Trusted``: also by a trusted certificate; ``Invalid``:
    changed after signing), the status codes, the signer, the actions and the digital source
    type. Without the library: a note saying how to read it."""
    if not has_manifest(data):
        return None
    kind = media_type(data)
    try:
        import c2pa
    except ImportError:
        return {"present": True, "note": f"a C2PA manifest is present; to read it: {INSTALL}"}
    try:
        with c2pa.Reader(kind or "image/png", io.BytesIO(data)) as reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
    except c2pa.C2paError as exc:
        return {"present": True, "validation_state": "Unreadable", "error": str(exc)}
    active = store.get("manifests", {}).get(store.get("active_manifest"), {})
    actions = [
        action
        for assertion in active.get("assertions", [])
        if str(assertion.get("label", "")).startswith("c2pa.actions")
        for action in assertion.get("data", {}).get("actions", [])
    ]
    source_types = [a["digitalSourceType"] for a in actions if a.get("digitalSourceType")]
    signature = active.get("signature_info", {})
    return {
        "validation_state": str(state),
        "validation_status": [s.get("code") for s in store.get("validation_status", [])],
        "claim_generator": [g.get("name") for g in active.get("claim_generator_info", [])],
        "title": active.get("title"),
        "signer": {k: signature.get(k) for k in ("issuer", "common_name", "alg") if k in signature},
        "actions": [a.get("action") for a in actions],
        "digital_source_type": source_types[0] if source_types else None,
    }


def _check_validity(chain: bytes, where: Path) -> None:
    """An expired or not-yet-valid signing certificate is a configuration error now, not a
    held job later."""
    import datetime

    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - c2pa-python depends on cryptography
        return
    try:
        cert = x509.load_pem_x509_certificates(chain)[0]
    except (ValueError, IndexError):
        raise ConfigError(
            [
                Problem(
                    f"outputs.c2pa.cert: {where}",
                    "not a PEM certificate chain",
                    f"the signing certificate first, then its issuers, in PEM ({_DOCS})",
                )
            ]
        ) from None
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError(
            [
                Problem(
                    f"outputs.c2pa.cert: {where}",
                    f"the signing certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d} "
                    f"to {cert.not_valid_after_utc:%Y-%m-%d}, not now",
                    "renew it",
                )
            ]
        )
