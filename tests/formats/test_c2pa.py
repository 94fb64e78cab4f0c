"""Issue 19: C2PA Content Credentials on outputs (``outputs.c2pa``), signed offline.

A throwaway CA and signing certificate are made with ``cryptography``; outputs are signed
with them and checked with c2pa-python's own reader: the manifest is intact, declares the
IPTC digital source type (AI-made), survives next to Darkroom's XMP record, and ``darkroom
inspect`` shows it. Skipped when the optional c2pa-python package is absent.
"""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from daemon.config.settings import load_settings
from daemon.errors import ConfigError
from daemon.outputs import c2pa as credentials_module
from daemon.outputs import imaging, provenance
from daemon.outputs.c2pa import ContentCredentials, summary

c2pa = pytest.importorskip("c2pa", reason="the optional c2pa-python package is not installed")
pytest.importorskip("cryptography", reason="c2pa-python brings cryptography")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

RECORD = {
    "digital_source_type": provenance.TRAINED_ALGORITHMIC_MEDIA,
    "prompt": "a lamp on a marble counter",
    "model": "tiny",
    "model_id": "random:sd-tiny",
    "rule": "explore",
    "step": "explore",
    "seed": 7,
}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class SigningFiles:
    chain: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Darkroom tests"),
        ]
    )


def make_cert(folder: Path, *, days: tuple[int, int] = (-1, 30)) -> SigningFiles:
    """A CA and a signing certificate (ES256) valid from ``days[0]`` to ``days[1]`` from now:
    what docs/rules.md tells a user to make for trying the option."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now + datetime.timedelta(days=d) for d in days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Darkroom test CA"))
        .issuer_name(_name("Darkroom test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + datetime.timedelta(days=60))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("Darkroom test signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    chain = folder / "chain.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    key_file = folder / "signer.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return SigningFiles(chain, key_file)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> SigningFiles:
    return make_cert(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture(scope="module")
def signer(cert: SigningFiles) -> ContentCredentials:
    return ContentCredentials.load(cert.chain, cert.key)


def output(content_type: str, record: dict | None = RECORD) -> bytes:
    image = Image.new("RGB", (64, 48), (180, 90, 30))
    data, returned = imaging.encode(image, f"x.{EXTENSIONS[content_type]}", record)
    assert returned == content_type
    return data


def summarised(data: bytes) -> dict:
    found = summary(data)
    assert found is not None, "no C2PA manifest found"
    return found


def read_with_c2pa(data: bytes, content_type: str) -> tuple[str, dict]:
    with c2pa.Reader(content_type, io.BytesIO(data)) as reader:
        return str(reader.get_validation_state()), json.loads(reader.json())


@pytest.mark.parametrize("content_type", list(EXTENSIONS))
def test_a_signed_output_verifies_and_declares_it_is_ai_made(
    signer: ContentCredentials, content_type: str
) -> None:
    signed = signer.sign(output(content_type), content_type, RECORD, title="explore-0.png")
    state, store = read_with_c2pa(signed, content_type)
    assert state == "Valid"  # intact and signed (the test CA is not a trusted root)
    codes = {s["code"] for s in store.get("validation_status", [])}
    assert codes <= {"signingCredential.untrusted"}, codes
    active = store["manifests"][store["active_manifest"]]
    actions = [
        a
        for x in active["assertions"]
        if x["label"].startswith("c2pa.actions")
        for a in x["data"]["actions"]
    ]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == provenance.TRAINED_ALGORITHMIC_MEDIA
    assert active["claim_generator_info"][0]["name"] == "Darkroom"
    assert active["signature_info"]["common_name"] == "Darkroom test signer"
    assert active["title"] == "explore-0.png"
    with Image.open(io.BytesIO(signed)) as image:  # still an ordinary image
        image.load()
        assert image.size == (64, 48)


def test_an_edit_declares_a_composite_and_keeps_the_xmp_record(signer: ContentCredentials) -> None:
    record = {**RECORD, "digital_source_type": provenance.COMPOSITE_WITH_AI}
    signed = signer.sign(output("image/jpeg", record), "image/jpeg", record)
    read = provenance.read(signed)
    assert read is not None
    c2pa_part = read.pop("c2pa")
    assert read == provenance.normalize(record)  # Darkroom's own record, unchanged
    assert c2pa_part["validation_state"] == "Valid"
    assert c2pa_part["digital_source_type"] == provenance.COMPOSITE_WITH_AI
    assert c2pa_part["signer"]["common_name"] == "Darkroom test signer"


def test_an_unsigned_output_reads_as_before(signer: ContentCredentials) -> None:
    assert "c2pa" not in (provenance.read(output("image/png")) or {})
    assert summary(output("image/png")) is None


def test_changing_a_signed_output_is_detected(signer: ContentCredentials) -> None:
    signed = bytearray(signer.sign(output("image/png"), "image/png", RECORD))
    at = signed.find(b"IDAT") + 12
    signed[at] ^= 0xFF
    assert summarised(bytes(signed))["validation_state"] == "Invalid"


def test_other_media_types_and_renditions_are_left_alone(signer: ContentCredentials) -> None:
    assert signer.sign(b"GIF89a...", "image/gif", RECORD) == b"GIF89a..."
    rendition = output("image/png", {"rule": "sized", "step": "web"})  # no model: no claim
    assert signer.sign(rendition, "image/png", {"rule": "sized"}) == rendition


def test_a_key_that_is_not_the_certificates_is_refused_at_start(tmp_path: Path) -> None:
    one, other = make_cert(tmp_path / "one"), make_cert(tmp_path / "other")
    with pytest.raises(ConfigError, match="cannot sign with this certificate and key") as caught:
        ContentCredentials.load(one.chain, other.key)
    assert "BEGIN" not in str(caught.value)  # never the key itself


def test_an_expired_certificate_is_refused_at_start(tmp_path: Path) -> None:
    old = make_cert(tmp_path, days=(-30, -1))
    with pytest.raises(ConfigError, match="signing certificate is valid from .* not now"):
        ContentCredentials.load(old.chain, old.key)


def test_an_unreadable_key_names_the_file(tmp_path: Path, cert: SigningFiles) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(ConfigError, match=f"outputs.c2pa.key.*cannot read {missing}"):
        ContentCredentials.load(cert.chain, missing)


def test_without_the_library_the_option_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, cert: SigningFiles, signer: ContentCredentials
) -> None:
    signed = signer.sign(output("image/png"), "image/png", RECORD)
    monkeypatch.setitem(sys.modules, "c2pa", None)
    with pytest.raises(ConfigError, match=r"pip install 'darkroom\[c2pa\]'"):
        ContentCredentials.load(cert.chain, cert.key)
    assert "pip install" in summarised(signed)["note"]


def test_the_config_option_resolves_paths_next_to_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "darkroom.yaml"
    config.write_text("outputs:\n  c2pa: {cert: certs/chain.pem, key: certs/signer.key}\n")
    settings = load_settings(config)
    assert settings.outputs.c2pa is not None
    assert settings.outputs.c2pa.cert == tmp_path / "certs" / "chain.pem"
    assert settings.outputs.c2pa.key == tmp_path / "certs" / "signer.key"
    assert settings.outputs.c2pa.alg == "es256" and settings.outputs.c2pa.timestamp_url is None
    config.write_text("outputs:\n  c2pa: {cert: a.pem, key: b.key, alg: md5}\n")
    with pytest.raises(ConfigError, match="outputs.c2pa.alg"):
        load_settings(config)


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
def test_inspect_shows_the_c2pa_manifest(tmp_path: Path, signer: ContentCredentials) -> None:
    path = tmp_path / "explore-0.png"
    path.write_bytes(signer.sign(output("image/png"), "image/png", RECORD, title=path.name))
    run = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    assert shown["c2pa"]["validation_state"] == "Valid"
    assert shown["c2pa"]["digital_source_type"] == provenance.TRAINED_ALGORITHMIC_MEDIA
    assert shown["c2pa"]["title"] == "explore-0.png"
    assert shown["prompt"] == RECORD["prompt"]


def test_signing_needs_no_network(
    monkeypatch: pytest.MonkeyPatch, signer: ContentCredentials
) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("C2PA signing tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    signed = signer.sign(output("image/webp"), "image/webp", RECORD)
    assert summarised(signed)["validation_state"] == "Valid"
    assert credentials_module.has_manifest(signed)


@pytest.mark.slow  # the real daemon as a subprocess
def test_the_daemon_signs_every_output_it_writes(
    daemon_factory: object, cert: SigningFiles
) -> None:
    """outputs.c2pa in the config: the daemon's outputs carry a valid manifest, and the
    manifest's sha256 is the signed file's (the hash is taken after signing)."""
    import hashlib

    from tests.conftest import make_image
    from tests.e2e.conftest import wait_for

    daemon = daemon_factory(  # type: ignore[operator]
        """\
        name: look
        match: {source: drop, include: ["*.png"]}
        prompt: "a lamp"
        steps:
          - {name: explore, model: stub, variants: 2, seed: 3}
        output: {sink: out}
        """,
        extra=f"outputs: {{c2pa: {{cert: {cert.chain}, key: {cert.key}}}}}\n",
    )
    daemon.start()
    root = daemon.workdir
    make_image(root / "drop" / "lamp.png")
    manifest_file = root / "out" / "look" / "lamp.png" / "manifest.json"
    wait_for(manifest_file.exists, 120, "the manifest")
    outputs = [o for s in json.loads(manifest_file.read_text())["steps"] for o in s["outputs"]]
    assert len(outputs) == 2
    for o in outputs:
        data = (root / "out" / o["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == o["sha256"]
        state, _ = read_with_c2pa(data, "image/png")
        assert state == "Valid"
    assert daemon.stop() == 0


def test_check_proves_the_signing_pair(tmp_path: Path, cert: SigningFiles) -> None:
    """``darkroom check`` loads outputs.c2pa the way the daemon does at start: a key that is
    not the certificate's is reported with the files named, before anything runs."""
    other = make_cert(tmp_path / "other")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "name: r\nmatch: {source: drop}\nsteps: [{name: s, model: stub}]\noutput: {sink: out}\n"
    )
    (tmp_path / "darkroom.yaml").write_text(
        "state_dir: state\nsources: {drop: {path: drop}}\nsinks: {out: {path: out}}\n"
        f"outputs: {{c2pa: {{cert: {cert.chain}, key: {other.key}}}}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "check"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1
    assert "cannot sign with this certificate and key" in result.stdout + result.stderr
