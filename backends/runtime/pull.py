"""Fetching a profile's weights before its first job: only the files its loader reads.

:func:`pull` downloads through the very code that loading uses: the task's diffusers pipeline
class's ``download`` (what ``from_pretrained`` calls first), with the profile's ``variant``
and ``revision``. diffusers decides there which files a pipeline needs (the components in
``model_index.json``, safetensors over ``.bin``, the ``fp16`` files when the variant is set)
and hands the result to ``huggingface_hub.snapshot_download``; :func:`_reporting_snapshots`
stands in that one seam so the plan (files, sizes, what is already cached) is printed before
a byte is fetched, with progress while it is. So ``pull`` and an offline load agree on the
files by construction. Extra weights a task loads after the pipeline (the IP-Adapter and its
image encoder, LoRAs named by repo id) are fetched by :func:`_extras`.

Progress: huggingface_hub's bars on a terminal; elsewhere (logs, CI) a line per file and a
line every ``LINE_INTERVAL`` seconds during a long file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from backends.base import ModelSpec, ModelUnavailable
from backends.runtime.hub import hf_cache_dir, offline, quiet_progress

LINE_INTERVAL = 10.0  # seconds between progress lines of one file when there is no terminal
ANNOUNCE_BYTES = 50_000_000  # files this big get a line when they start, not only when done
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")


@dataclass(frozen=True)
class RepoFile:
    """One file of a repo that a profile needs."""

    name: str
    size: int | None
    cached: bool


@dataclass
class Fetched:
    """What :func:`pull` fetched (or found) for one repo of a profile."""

    repo: str
    what: str  # "pipeline", "IP-Adapter", "LoRA"
    files: list[RepoFile] = field(default_factory=list)
    location: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def downloaded_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files if not f.cached)


def offline_refusal() -> str | None:
    """Why ``pull`` cannot go online here (HF_HUB_OFFLINE is set), with the override; else None."""
    if not offline():
        return None
    value = os.environ.get("HF_HUB_OFFLINE", "1")
    return (
        f"HF_HUB_OFFLINE={value} is set in this environment (the Makefile, the systemd unit's "
        "environment file and the tests set it so that jobs never download): `darkroom models "
        "pull` is the one command that goes online. Run it with the variable unset or 0, e.g. "
        "`HF_HUB_OFFLINE=0 darkroom models pull PROFILE` (or `make pull PROFILES=...`)."
    )


def human(size: int | None) -> str:
    """Bytes as a person reads them (1.6 GB, 512 KB)."""
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover (the loop returns)


def pull(spec: ModelSpec, pipeline_class: str, *, out: TextIO, bars: bool) -> list[Fetched]:
    """Fetch the files ``spec``'s pipeline (``pipeline_class``, a diffusers attribute) and its
    extras load, into the Hugging Face cache the loader reads. Raises ModelUnavailable with the
    fix for an unknown repo, a gated one without access, or no network."""
    refusal = offline_refusal()
    if refusal:
        raise ModelUnavailable(refusal)
    import diffusers

    cls = getattr(diffusers, pipeline_class, None)
    if cls is None or not hasattr(cls, "download"):
        # AutoPipelineFor*: the class that loads is chosen from model_index.json, which is what
        # DiffusionPipeline.download does too; the files it picks depend on model_index.json.
        cls = diffusers.DiffusionPipeline
    fetched: list[Fetched] = []
    _check_access(spec.model, spec.revision)
    pipeline = Fetched(spec.model, "pipeline")
    kwargs: dict[str, Any] = {"revision": spec.revision, "cache_dir": hf_cache_dir()}
    variant = spec.option("variant")
    with _reporting_snapshots(pipeline, out, bars), _hub_errors(spec.model):
        try:
            location = cls.download(spec.model, variant=variant, **kwargs)
        except ValueError as exc:
            if not variant or "variant" not in str(exc):
                raise
            # As loading does: a repo without files of that variant loads its default files.
            print(f"{spec.model} has no {variant} files; fetching its default weights", file=out)
            location = cls.download(spec.model, **kwargs)
    pipeline.location = str(location)
    if not pipeline.files:  # diffusers found every file cached and did not ask for more
        pipeline.files = _cached_files(Path(location))
        print(
            f"{spec.model} (pipeline): {len(pipeline.files)} files, "
            f"{human(pipeline.total_bytes)}; all already in {location}",
            file=out,
        )
    fetched.append(pipeline)
    for repo, what, patterns, revision in _extras(spec):
        _check_access(repo, revision)
        extra = Fetched(repo, what)
        with _hub_errors(repo):
            extra.location = _snapshot(extra, out, bars, repo, patterns, revision)
        fetched.append(extra)
    return fetched


def _cached_files(snapshot: Path) -> list[RepoFile]:
    """The files of a cached snapshot (links into the cache's blobs), with their sizes."""
    return [
        RepoFile(str(path.relative_to(snapshot)), path.stat().st_size, True)
        for path in sorted(snapshot.rglob("*"))
        if path.is_file()
    ]


def _extras(spec: ModelSpec) -> list[tuple[str, str, list[str], str | None]]:
    """(repo, what, allow_patterns, revision) for weights loaded after the pipeline."""
    found: list[tuple[str, str, list[str], str | None]] = []
    adapter = spec.option("ip_adapter")
    if isinstance(adapter, str) and _is_repo_id(adapter):
        sub = spec.option("ip_adapter_subfolder", "") or ""
        weight = spec.option("ip_adapter_weight_name") or "*"
        encoder = spec.option("ip_adapter_image_encoder_folder", "image_encoder")
        prefix = f"{sub}/" if sub else ""
        patterns = [f"{prefix}{weight}"]
        if encoder:
            # load_ip_adapter reads the encoder from <subfolder>/<image_encoder_folder>
            # (safetensors where the folder has them: _prefer_safetensors)
            patterns.append(f"{prefix}{encoder}/*")
        found.append((adapter, "IP-Adapter", patterns, spec.option("ip_adapter_revision")))
    for lora in spec.option("loras") or []:
        path = lora.get("path") if isinstance(lora, dict) else None
        if isinstance(path, str) and _is_repo_id(path):
            weight = lora.get("weight_name") or "*.safetensors"
            found.append((path, "LoRA", [weight], lora.get("revision")))
    return found


def _is_repo_id(value: str) -> bool:
    return (
        value.count("/") == 1
        and not value.startswith(("random:", "/", ".", "~"))
        and not Path(value).expanduser().exists()
    )


def _check_access(repo: str, revision: str | None) -> None:
    """Ask the hub about ``repo`` first, so a gated, private or misspelt repo fails with its fix
    (diffusers would log a warning and fall back to the cache)."""
    from huggingface_hub import HfApi

    with _hub_errors(repo):
        HfApi().model_info(repo, revision=revision)


@contextmanager
def _hub_errors(repo: str) -> Iterator[None]:
    """huggingface_hub's and httpx's errors as ModelUnavailable that say what to do."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"{constants.ENDPOINT}/{repo}"
    has_token = bool(get_token())
    try:
        yield
    except GatedRepoError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if has_token:
            fix = (
                f"the token in HF_TOKEN has no access yet: accept the licence on {page} while "
                "logged in with the account the token belongs to (some repos approve requests "
                "by hand), then run this again"
            )
        else:
            fix = (
                f"accept its licence on {page} with your Hugging Face account, create a read "
                "token at https://huggingface.co/settings/tokens and run this again with "
                "HF_TOKEN=hf_... in the environment (docs/models.md)"
            )
        raise ModelUnavailable(f"{repo} is gated (HTTP {status}): {fix}") from exc
    except RevisionNotFoundError as exc:
        raise ModelUnavailable(
            f"{repo}: the profile's revision does not exist there; fix the profile's "
            f"revision ({exc})"
        ) from exc
    except RepositoryNotFoundError as exc:
        private = "" if has_token else " or it is private and HF_TOKEN is not set"
        raise ModelUnavailable(
            f"{repo}: no such model on {constants.ENDPOINT}{private}; check the profile's model "
            f"(darkroom models --all lists them)"
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise ModelUnavailable(
                f"{repo}: the hub refused access (HTTP {status}); "
                + (
                    "the token in HF_TOKEN is invalid or lacks read access: create a read "
                    "token at https://huggingface.co/settings/tokens"
                    if has_token
                    else "set HF_TOKEN to a read token (https://huggingface.co/settings/tokens)"
                )
            ) from exc
        raise ModelUnavailable(
            f"{repo}: the hub answered HTTP {status}; try again later ({exc})"
        ) from exc
    except Exception as exc:
        if not _network_error(exc) and not isinstance(exc, LocalEntryNotFoundError):
            raise
        raise ModelUnavailable(
            f"{repo}: cannot reach {constants.ENDPOINT} ({type(exc).__name__}: {exc}); check "
            "the network, a proxy (HTTPS_PROXY) or HF_ENDPOINT"
        ) from exc


def _network_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a failed connection rather than an answer."""
    import httpx

    names = {"ConnectError", "ConnectTimeout", "ReadTimeout", "NetworkError", "ProxyError"}
    while exc is not None:
        if isinstance(exc, (httpx.TransportError, ConnectionError)) or type(exc).__name__ in names:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def _reporting_snapshots(target: Fetched, out: TextIO, bars: bool) -> Iterator[None]:
    """Within: diffusers' call to ``snapshot_download`` (the one seam where its chosen file
    patterns reach the hub) goes through :func:`_snapshot`, which reports and shows progress."""
    from diffusers.pipelines import pipeline_utils

    original = pipeline_utils.snapshot_download

    def reporting(repo_id: str, **kwargs: Any) -> str:
        return _snapshot(
            target,
            out,
            bars,
            repo_id,
            kwargs.pop("allow_patterns", None),
            kwargs.pop("revision", None),
            ignore_patterns=kwargs.pop("ignore_patterns", None),
            **kwargs,
        )

    setattr(pipeline_utils, "snapshot_download", reporting)  # noqa: B010 - typed as overloads
    try:
        yield
    finally:
        setattr(pipeline_utils, "snapshot_download", original)  # noqa: B010


def _snapshot(
    target: Fetched,
    out: TextIO,
    bars: bool,
    repo: str,
    allow_patterns: list[str] | None,
    revision: Any,
    **kwargs: Any,
) -> str:
    """``snapshot_download`` of the matching files: the plan first (dry run), then the files."""
    from huggingface_hub import hf_hub_download, snapshot_download

    kwargs.setdefault("cache_dir", hf_cache_dir())
    kwargs.pop("local_files_only", None)  # pull is online by definition
    common = {"allow_patterns": allow_patterns, "revision": revision, **kwargs}
    with quiet_progress():
        plan = snapshot_download(repo, dry_run=True, tqdm_class=_Silent, **common)
    if target.what == "IP-Adapter":
        plan = _prefer_safetensors(plan)
        common["allow_patterns"] = [p.filename for p in plan]
    target.files = [RepoFile(p.filename, p.file_size, not p.will_download) for p in plan]
    missing = [p for p in plan if p.will_download]
    print(
        f"{repo} ({target.what}): {len(plan)} files, {human(target.total_bytes)}; "
        + (
            f"{human(target.downloaded_bytes)} to download in {len(missing)} files"
            if missing
            else "all already in the cache"
        ),
        file=out,
        flush=True,
    )
    if bars and missing:
        return str(snapshot_download(repo, **common))  # huggingface_hub's bars, on stderr
    commit = plan[0].commit_hash
    for i, item in enumerate(missing, 1):
        started = time.monotonic()
        if (item.file_size or 0) >= ANNOUNCE_BYTES:  # a long one: say what is coming
            print(
                f"  [{i}/{len(missing)}] {item.filename} ({human(item.file_size)}) ...",
                file=out,
                flush=True,
            )
        hf_hub_download(
            repo,
            item.filename,
            revision=commit,
            cache_dir=kwargs.get("cache_dir"),
            token=kwargs.get("token"),
            tqdm_class=_line_bar(out, item.filename),
        )
        seconds = max(time.monotonic() - started, 1e-3)
        rate = (item.file_size or 0) / seconds
        print(
            f"  [{i}/{len(missing)}] {item.filename}: done in {seconds:.1f} s ({human(int(rate))}/s)",
            file=out,
            flush=True,
        )
    # Every file is here now: this records the branch's commit and the repo's file list
    # (what an offline load reads to pick the same files) without fetching anything again.
    return str(snapshot_download(repo, tqdm_class=_Silent, **common))


def _prefer_safetensors(plan: list[Any]) -> list[Any]:
    """transformers reads ``model.safetensors`` when a folder has it; never fetch the .bin too."""
    folders_with_safetensors = {
        os.path.dirname(p.filename) for p in plan if p.filename.endswith(".safetensors")
    }
    return [
        p
        for p in plan
        if not (
            p.filename.endswith(_WEIGHT_SUFFIXES)
            and not p.filename.endswith(".safetensors")
            and os.path.dirname(p.filename) in folders_with_safetensors
            and not _is_adapter_file(p.filename)
        )
    ]


def _is_adapter_file(name: str) -> bool:
    # The adapter weights themselves may be a .bin (h94/IP-Adapter's ip-adapter_sdxl.bin).
    return "ip-adapter" in os.path.basename(name)


class _Silent:
    """A progress bar that shows nothing (the dry run's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: float | None = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass

    set_description_str = set_postfix_str = refresh = set_description


def _line_bar(out: TextIO, name: str) -> type[Any]:
    """A tqdm stand-in that prints a line every LINE_INTERVAL seconds: bars need a terminal."""

    class LineBar(_Silent):
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kw: Any):
            self.total, self.n, self.last = total, initial, time.monotonic()

        def update(self, n: float | None = 1) -> None:
            self.n += int(n or 0)
            now = time.monotonic()
            if now - self.last >= LINE_INTERVAL:
                self.last = now
                print(f"      {name}: {human(self.n)} of {human(self.total)}", file=out, flush=True)

    return LineBar
