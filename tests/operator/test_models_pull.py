"""Issue 22: ``darkroom models pull`` fetches only what a profile loads, then it runs offline.

A fake Hugging Face hub on loopback serves the routes huggingface_hub calls (model info,
the recursive tree listing, HEAD/GET ``resolve`` with ``X-Repo-Commit``, ``ETag`` and
``Content-Length``); ``HF_ENDPOINT`` points the real CLI at it, ``HF_HOME`` is a temp folder.
Its repo is a tiny random SD pipeline plus files a careless download would fetch too: fp32
twins of the fp16 weights, ``.bin`` copies, a root checkpoint, a README.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # the CLI runs as a subprocess

REPO_ID = "acme/tiny-sd"
GATED_ID = "acme/gated-sd"
ADAPTER_ID = "acme/ip-adapter"
GOOD_TOKEN = "hf_accepted"


@dataclass
class FakeHub:
    """Repos (id -> {path: bytes}) and every request served, as (method, path, token)."""

    repos: dict[str, dict[str, bytes]]
    gated: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def fetched(self, repo: str) -> set[str]:
        """Files of ``repo`` whose bytes were sent (GET resolve)."""
        prefix = f"/{repo}/resolve/{self.commit(repo)}/"
        return {
            p[len(prefix) :] for m, p, _ in self.requests if m == "GET" and p.startswith(prefix)
        }


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def _json(self, value: object, status: int = 200) -> None:
            self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

        def _refused(self, repo: str) -> bool:
            """The hub's answers for a gated repo: 401 without a token, 403 before the
            licence is accepted (any token but GOOD_TOKEN)."""
            if repo not in hub.gated:
                return False
            token = (self.headers.get("authorization") or "").removeprefix("Bearer ")
            if token == GOOD_TOKEN:
                return False
            status = 403 if token else 401
            message = f"Access to model {repo} is restricted. You must have access to it."
            body = json.dumps({"error": message}).encode()
            self._send(status, body, {"X-Error-Code": "GatedRepo", "X-Error-Message": message})
            return True

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            token = self.headers.get("authorization")
            hub.requests.append((self.command, path, token))
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo, rest = "/".join(parts[2:4]), parts[4:]
                if repo not in hub.repos:
                    return self._json({"error": "Repository not found"}, 404)
                if self._refused(repo):
                    return None
                files = hub.repos[repo]
                if not rest or rest[0] == "revision":  # model_info / repo_info
                    siblings = [{"rfilename": name} for name in files]
                    info = {"id": repo, "sha": hub.commit(repo), "siblings": siblings}
                    return self._json({**info, "private": False, "gated": repo in hub.gated})
                if rest[0] == "tree":  # list_repo_tree(recursive=True), one page
                    return self._json(
                        [
                            {
                                "type": "file",
                                "path": name,
                                "size": len(data),
                                "oid": hashlib.sha1(data).hexdigest(),
                            }
                            for name, data in files.items()
                        ]
                    )
            if len(parts) > 4 and parts[2] == "resolve":  # /{repo}/resolve/{rev}/{file}
                repo, name = "/".join(parts[:2]), "/".join(parts[4:])
                if repo not in hub.repos or name not in hub.repos[repo]:
                    return self._send(404, headers={"X-Error-Code": "EntryNotFound"})
                if self._refused(repo):
                    return None
                data = hub.repos[repo][name]
                headers = {
                    "X-Repo-Commit": hub.commit(repo),
                    "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                }
                return self._send(200, data, headers)
            return self._json({"error": "not found"}, 404)

        do_HEAD = do_GET

    return Handler


@pytest.fixture
def hub(model_cache: Path) -> Iterator[FakeHub]:
    from backends.random_models import build_random_model

    built = build_random_model("sd-tiny", model_cache)
    files = {str(p.relative_to(built)): p.read_bytes() for p in built.rglob("*") if p.is_file()}
    for name in list(files):
        if name.endswith("diffusion_pytorch_model.safetensors"):
            # the repo's fp16 files (the profile's variant) beside the fp32 ones, and .bin copies
            files[name.replace(".safetensors", ".fp16.safetensors")] = files[name]
            files[name.replace(".safetensors", ".bin")] = b"\0" * 4096
    files["sd-tiny-full.ckpt"] = b"\0" * 8192  # a single-file checkpoint: never read
    files["README.md"] = b"# tiny\n"
    adapter = {  # h94/IP-Adapter's layout: adapters for two families, each with an encoder
        "sdxl_models/ip-adapter_sdxl.bin": b"\1" * 2048,
        "sdxl_models/ip-adapter_sdxl_vit-h.bin": b"\2" * 2048,
        "sdxl_models/image_encoder/config.json": b"{}",
        "sdxl_models/image_encoder/model.safetensors": b"\3" * 4096,
        "sdxl_models/image_encoder/pytorch_model.bin": b"\4" * 4096,
        "models/ip-adapter_sd15.bin": b"\5" * 2048,
        "models/image_encoder/model.safetensors": b"\6" * 4096,
    }
    state = FakeHub({REPO_ID: files, GATED_ID: dict(files), ADAPTER_ID: adapter}, gated={GATED_ID})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


RULE = """\
name: look
match: {source: drop, include: ["**/*.png"]}
prompt: "{stem} at dusk"
steps:
  - {name: explore, model: acme, variants: 1, seed: 3}
output: {sink: out}
"""


@pytest.fixture
def workdir(tmp_path: Path, hub: FakeHub) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "look.yaml").write_text(RULE)
    (tmp_path / "darkroom.yaml").write_text(
        textwrap.dedent(f"""\
        state_dir: state
        sources: {{drop: {{path: drop}}}}
        sinks: {{out: {{path: out}}}}
        worker: {{device: cpu, threads: 1}}
        profiles:
          acme: {{like: tiny, model: {REPO_ID}, options: {{variant: fp16}}}}
          acme-gated: {{like: tiny, model: {GATED_ID}}}
          acme-ip:
            like: tiny
            task: ip-adapter
            model: {REPO_ID}
            options:
              ip_adapter: {ADAPTER_ID}
              ip_adapter_subfolder: sdxl_models
              ip_adapter_weight_name: ip-adapter_sdxl.bin
        """)
    )
    (tmp_path / "drop").mkdir()
    return tmp_path


def darkroom(*args: str, cwd: Path, hub: FakeHub, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "PYTHONPATH": str(REPO),
        "HF_HOME": str(cwd / "hf"),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN"):  # only what the test passes
        base.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args, "--config", str(cwd / "darkroom.yaml")],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **env},
        timeout=600,
    )


# What a worker does with the acme profile: build its spec, load, run once (offline).
LOAD_AND_RUN = f"""
import json, pathlib
from PIL import Image
from backends import backend_class
from backends.base import ModelSpec, Request
spec = ModelSpec(task="img2img", model="{REPO_ID}", dtype="float32",
                 options=ModelSpec.freeze_options({{"variant": "fp16"}}))
backend = backend_class("img2img")(spec, pathlib.Path("models"))
backend.load()
result = backend.run(Request(images=[Image.new("RGB", (64, 64), "red")], prompt="dusk",
                             seeds=[3], params={{"steps": 2, "strength": 0.5, "guidance": 0.0}}))
print(json.dumps({{"location": backend._location, "outputs": len(result.images)}}))
"""


def run_offline(code: str, cwd: Path, hub: FakeHub) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "PYTHONPATH": str(REPO),
        "HF_HOME": str(cwd / "hf"),
        "HF_ENDPOINT": hub.url,  # so that any request would show in hub.requests
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_pull_fetches_only_what_the_profile_loads_then_runs_offline(
    workdir: Path, hub: FakeHub
) -> None:
    result = darkroom("models", "pull", "--all-used", cwd=workdir, hub=hub)
    assert result.returncode == 0, result.stdout + result.stderr

    needed = {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    }
    # Only those bytes crossed the network, and only those are in the cache.
    assert hub.fetched(REPO_ID) == needed
    snapshot = workdir / "hf" / "hub" / "models--acme--tiny-sd" / "snapshots" / hub.commit(REPO_ID)
    assert {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()} == needed

    # The honest size up front, then a line per file (no terminal here).
    files = hub.repos[REPO_ID]
    total = sum(len(files[name]) for name in needed)
    out = result.stdout
    assert f"{REPO_ID} (pipeline): 10 files, {total / 1e6:.1f} MB" in out, out
    assert out.index("10 files") < out.index("[1/")
    for name in needed - {"model_index.json"}:  # diffusers reads model_index.json first
        assert f"] {name}: done" in out, out
    assert "acme: ready" in out

    # `darkroom models` sees the weights; the task's backend loads and runs them offline,
    # through the from_pretrained that jobs use (only the fp16 files are there), and asks the
    # hub for nothing.
    listing = darkroom("models", "--json", cwd=workdir, hub=hub, HF_HUB_OFFLINE="1")
    rows = {row["profile"]: row for row in json.loads(listing.stdout)}
    assert rows["acme"]["weights"] == "in HF cache", listing.stderr
    served = len(hub.requests)
    loaded = run_offline(LOAD_AND_RUN, cwd=workdir, hub=hub)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    info = json.loads(loaded.stdout.splitlines()[-1])
    assert info["location"] == REPO_ID and info["outputs"] == 1
    assert len(hub.requests) == served, hub.requests[served:]

    # A second pull finds everything in place and downloads nothing.
    again = darkroom("models", "pull", "acme", cwd=workdir, hub=hub)
    assert again.returncode == 0, again.stderr
    assert hub.fetched(REPO_ID) == needed
    assert "already in" in again.stdout and "(0 B downloaded)" in again.stdout


def test_pull_refuses_while_hf_hub_offline_is_set_and_says_how_to_override(
    workdir: Path, hub: FakeHub
) -> None:
    result = darkroom("models", "pull", "acme", cwd=workdir, hub=hub, HF_HUB_OFFLINE="1")
    assert result.returncode == 2
    assert "HF_HUB_OFFLINE=1 is set" in result.stderr
    assert "HF_HUB_OFFLINE=0 darkroom models pull" in result.stderr
    assert hub.requests == []


def test_gated_model_says_accept_the_licence_and_set_hf_token(workdir: Path, hub: FakeHub) -> None:
    page = f"{hub.url}/{GATED_ID}"
    anonymous = darkroom("models", "pull", "acme-gated", cwd=workdir, hub=hub)
    assert anonymous.returncode == 1
    assert f"{GATED_ID} is gated (HTTP 401)" in anonymous.stderr, anonymous.stderr
    assert page in anonymous.stderr and "HF_TOKEN=hf_" in anonymous.stderr
    assert "Traceback" not in anonymous.stderr

    not_accepted = darkroom(
        "models", "pull", "acme-gated", cwd=workdir, hub=hub, HF_TOKEN="hf_other"
    )
    assert not_accepted.returncode == 1
    assert "(HTTP 403)" in not_accepted.stderr and "no access yet" in not_accepted.stderr
    assert f"accept the licence on {page}" in not_accepted.stderr

    accepted = darkroom("models", "pull", "acme-gated", cwd=workdir, hub=hub, HF_TOKEN=GOOD_TOKEN)
    assert accepted.returncode == 0, accepted.stderr
    assert "model_index.json" in hub.fetched(GATED_ID)
    tokens = {token for method, path, token in hub.requests if GATED_ID in path and token}
    assert f"Bearer {GOOD_TOKEN}" in tokens


def test_pull_names_an_unknown_profile(workdir: Path, hub: FakeHub) -> None:
    result = darkroom("models", "pull", "acme", "no-such", cwd=workdir, hub=hub)
    assert result.returncode == 2
    assert "unknown profile(s) no-such" in result.stderr
    assert hub.requests == []


def test_an_ip_adapter_profile_also_fetches_its_adapter_and_encoder_only(
    workdir: Path, hub: FakeHub
) -> None:
    result = darkroom("models", "pull", "acme-ip", cwd=workdir, hub=hub)
    assert result.returncode == 0, result.stdout + result.stderr
    assert hub.fetched(ADAPTER_ID) == {
        "sdxl_models/ip-adapter_sdxl.bin",
        "sdxl_models/image_encoder/config.json",
        "sdxl_models/image_encoder/model.safetensors",
    }
    assert f"{ADAPTER_ID} (IP-Adapter): 3 files" in result.stdout
    assert "unet/diffusion_pytorch_model.safetensors" in hub.fetched(REPO_ID)  # no variant set
