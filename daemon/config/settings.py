"""Configuration: one YAML file, overridden by ``DARKROOM_*`` environment variables.

This is the only module that reads configuration. ``load_settings`` is called once by
the composition root and the resulting :class:`Settings` is passed down.

Precedence (highest first): environment (``DARKROOM_WORKER__DEVICE=cuda:0``; nested keys
joined with ``__``), then the YAML file given with ``--config``, then the defaults here.
Relative paths in the YAML file are relative to the file's folder; relative paths in the
environment are relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import EnvSettingsSource

from daemon.config import yamlfile
from daemon.errors import ConfigError, Problem

ENV_PREFIX = "DARKROOM_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FolderSourceConfig(_Strict):
    """A watched folder. ``quiet_period``: seconds a file's size and mtime must stay
    unchanged before it counts as complete (network shares never say 'closed')."""

    type: Literal["folder"] = "folder"
    path: Path
    quiet_period: float = Field(1.0, gt=0, le=3600)
    rescan_interval: float = Field(30.0, gt=0)
    poll: bool = False
    ignore: list[str] = []
    quarantine: Path | None = (
        None  # failed inputs go here; default: <path>/.quarantine (never watched)
    )
    # Seconds a file that fails to decode because it looks cut off (an interrupted or paused
    # upload: rsync --partial, a slow writer) stays in place unchanged before it is quarantined.
    truncated_grace: float = Field(120.0, ge=0)
    # on_success: move puts inputs here; default: <path>/.processed (never watched). Like
    # quarantine, best outside the watched folder, where uploaders cannot plant anything.
    processed: Path | None = None

    @model_validator(mode="after")
    def _daemon_folders(self) -> FolderSourceConfig:
        # The daemon creates these itself and refuses them at run time when they are a
        # symlink or another user's (daemon.safefs); say so at check time too.
        root = os.path.abspath(self.path)
        for key in ("quarantine", "processed"):
            folder = getattr(self, key)
            if folder is None:
                continue
            text = os.path.abspath(folder)
            if os.path.islink(text):
                raise ValueError(
                    f"{key}: {folder} is a symlink; the daemon refuses to write through one."
                    f" Name the real folder (or a new one: the daemon creates it)"
                )
            if text == root:
                raise ValueError(f"{key}: {folder} is the watched folder itself")
            inside = os.path.relpath(text, root)
            if not inside.startswith("..") and not any(
                part.startswith(".") for part in inside.split(os.sep)
            ):
                raise ValueError(
                    f"{key}: {folder} is inside the watched folder and would be watched"
                    " (its files would arrive again). Put it outside the watched folder"
                    " (recommended) or in a dot-folder such as .quarantine"
                )
        return self

    def where(self) -> str:
        return f"{self.path.resolve()}/"


class S3Endpoint(_Strict):
    """Credentials never live here: boto3's standard chain supplies them (environment,
    shared config, instance role). ``endpoint_url`` is for MinIO, R2, Ceph and tests."""

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None

    @field_validator("endpoint_url")
    @classmethod
    def _plain_endpoint(cls, value: str | None) -> str | None:
        # botocore repeats the endpoint in its errors, which reach logs and manifests: a
        # user, password or token in it would be published (docs/security.md).
        from urllib.parse import urlsplit

        if value is None:
            return value
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            raise ValueError("endpoint_url is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "endpoint_url must be http(s)://host[:port], e.g. http://127.0.0.1:9000"
            )
        hidden = parts.username, parts.password
        if hidden != (None, None) or parts.query or parts.fragment:
            shown = f"{parts.scheme}://{parts.hostname}{f':{port}' if port else ''}{parts.path}"
            raise ValueError(
                f"endpoint_url {shown}: remove the user, password, query or fragment; "
                "credentials come from boto3's standard chain (docs/s3.md), never the URL"
            )
        return value

    def where(self) -> str:
        # Prefixes are folders (the S3 source and sink add the "/"), so compare them as such.
        prefix = self.prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}/" if prefix else f"s3://{self.bucket}/"


class S3SourceConfig(S3Endpoint):
    """``mode: poll`` lists the prefix every ``poll_interval`` s; ``mode: events`` long-polls
    ``queue_url`` for S3 event notifications and lists every ``reconcile_interval`` s to
    catch events that never came."""

    type: Literal["s3"]
    mode: Literal["poll", "events"] = "poll"
    include: list[str] = []
    exclude: list[str] = []
    poll_interval: float = Field(60.0, gt=0)
    queue_url: str | None = None
    reconcile_interval: float = Field(900.0, gt=0)
    visibility_timeout: int = Field(300, ge=10, le=43200)
    quarantine_prefix: str | None = None  # failed inputs get a <key>.reason.json record here
    wait_time: int = Field(20, ge=0, le=20)
    # Events mode: messages held (received, not yet settled) at once; keeps a daemon from
    # taking the whole queue when several share it.
    max_in_flight: int = Field(20, ge=1, le=10000)
    # Events mode: reconciliation leaves objects younger than this to their events.
    reconcile_grace: float = Field(60.0, ge=0)

    @field_validator("queue_url")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _events_need_a_queue(self) -> S3SourceConfig:
        # Without it `run` would start and fail on the first receive (issue 20).
        if self.mode == "events" and not self.queue_url:
            raise ValueError(
                "mode: events needs queue_url: the URL of the SQS queue that receives this"
                " bucket's ObjectCreated notifications (docs/s3.md), or use mode: poll"
            )
        return self


def _kind(value: Any) -> str:
    # ``type`` may be left out: a folder is the common case.
    if isinstance(value, dict):
        return value.get("type", "folder")
    return getattr(value, "type", "folder")


SourceConfig = Annotated[
    Annotated[FolderSourceConfig, Tag("folder")] | Annotated[S3SourceConfig, Tag("s3")],
    Discriminator(_kind),
]


class FolderSinkConfig(_Strict):
    type: Literal["folder"] = "folder"
    path: Path

    def where(self) -> str:
        return f"{self.path.resolve()}/"


class S3SinkConfig(S3Endpoint):
    type: Literal["s3"]
    multipart_threshold: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)


SinkConfig = Annotated[
    Annotated[FolderSinkConfig, Tag("folder")] | Annotated[S3SinkConfig, Tag("s3")],
    Discriminator(_kind),
]


class ProfileConfig(_Strict):
    """Overrides of a built-in profile's fields, or a whole new profile. ``like: NAME``
    starts from another profile's fields (``house-style: {like: sdxl-turbo, options: ...}``;
    ``sd-turbo: {like: tiny}`` runs rules offline on the tiny twin)."""

    like: str | None = None
    task: str | None = None
    model: str | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None
    max_side: int | None = Field(None, ge=8, le=8192)
    defaults: dict[str, Any] = {}
    options: dict[str, Any] = {}
    provider: str | None = None  # hosted models: who runs them
    price_per_image: float | None = Field(None, ge=0)  # USD estimate, shown per variant
    price_per_megapixel: float | None = Field(None, ge=0)


def _check_device(value: str) -> str:
    if value in ("auto", "cpu", "cuda", "mps") or value.startswith("cuda:"):
        return value
    raise ValueError("must be auto, cpu, cuda, cuda:N or mps")


class WorkerConfig(_Strict):
    """The worker pool: one spawned process per device, each with its own model cache.

    ``devices`` is the list form (``[cuda:0, cuda:1]``, ``auto`` or ``cpu``); ``device`` is
    the older single-device spelling and is used when ``devices`` is not given, so existing
    configs keep working. ``auto`` finds the GPUs without touching CUDA in the main process
    and falls back to one CPU worker with ``threads`` (or ``cpu_threads``) threads.
    """

    device: str = "auto"  # auto | cpu | cuda | cuda:N  (alias for a single entry of devices)
    devices: str | list[str] | None = None  # auto | cpu | [cuda:0, cuda:1, ...]; None: [device]
    threads: int = Field(0, ge=0)  # CPU threads for torch; 0 = all cores
    cpu_threads: int | None = Field(None, ge=0)  # threads of a CPU worker; default: threads
    job_timeout: float = Field(600.0, gt=0)
    stop_timeout: float = Field(30.0, ge=0)  # how long SIGTERM lets a running job finish
    ping_interval: float = Field(
        30.0, gt=0
    )  # an idle worker is asked to touch its device this often
    # Seconds without a successful answer from the worker before the service stops telling
    # systemd it is healthy (WATCHDOG=1). Default: job_timeout + 120.
    health_timeout: float | None = Field(None, gt=0)
    # Dynamic batching: jobs of one profile with the same prompt, seeds, size and params run
    # as one model call of up to max_batch jobs. 1 turns it off everywhere; a profile turns it
    # off for itself with options {batch: false}. max_wait_ms: how long a batch waits for
    # companions that have not arrived yet (0: batch only what is already queued, which adds
    # no latency and is where batching pays: a backlog).
    max_batch: int = Field(4, ge=1, le=64)
    max_wait_ms: float = Field(0.0, ge=0, le=60000)
    # Per-device budget for loaded pipelines (GB); least recently used ones are unloaded
    # beyond it. None: no limit (all models the rules use stay loaded).
    memory_budget_gb: float | None = Field(None, gt=0)
    # Replace a worker after this many jobs, or when its resident memory passes this many GB
    # (slow leaks in native code). None: never.
    recycle_after_jobs: int | None = Field(None, ge=1)
    recycle_rss_gb: float | None = Field(None, gt=0)
    # Dispatch weights per rule (default 1): a rule with weight 2 gets twice the share of the
    # devices while both have work. No rule ever starves another.
    priorities: dict[str, float] = {}

    @property
    def unhealthy_after(self) -> float:
        return self.health_timeout or self.job_timeout + 120

    @property
    def device_list(self) -> list[str]:
        """The configured devices, before ``auto`` is resolved (see daemon.devices)."""
        if self.devices is None:
            return [self.device]
        return [self.devices] if isinstance(self.devices, str) else list(self.devices)

    @property
    def cpu_worker_threads(self) -> int:
        return self.threads if self.cpu_threads is None else self.cpu_threads

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return _check_device(value)

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is None:
            return None
        if isinstance(value, str):
            return _check_device(value)
        if not value:
            raise ValueError("must name at least one device (or be auto / cpu)")
        if len(set(value)) != len(value):
            raise ValueError("lists a device twice; one worker per device")
        return [_check_device(v) for v in value]

    @field_validator("priorities")
    @classmethod
    def _priorities(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not v > 0]
        if bad:
            raise ValueError(f"weights must be positive (rules {', '.join(bad)})")
        return value


class JobsConfig(_Strict):
    max_attempts: int = Field(3, ge=1, le=100)
    retry_backoff: float = Field(2.0, ge=0)  # seconds; doubles with each attempt
    # A job held by an environment fault (missing key, weights or tool; sink unreachable;
    # disk full) tries again after hold_backoff seconds, doubling up to hold_backoff_max,
    # without using attempts; a reload or `darkroom retry --held` retries at once.
    hold_backoff: float = Field(30.0, gt=0)
    hold_backoff_max: float = Field(600.0, gt=0)


class DigestConfig(_Strict):
    """A daily index sheet per rule of everything processed the day before."""

    enabled: bool = True
    at: str = Field("00:05", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")  # local time, HH:MM


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or "localhost") can only be reached from this machine."""
    import ipaddress

    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


class MetricsConfig(_Strict):
    """Prometheus metrics, /healthz and /readyz over HTTP (loopback unless you say so)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)  # 0 = any free port
    # A host other than loopback serves job counts and source names to the network: only
    # with this set (and a warning at start).
    allow_remote: bool = False
    # Seconds an idle or slow connection may hold a server thread; at most
    # max_connections are served at once, the rest answered 503 at once.
    timeout: float = Field(5.0, gt=0, le=300)
    max_connections: int = Field(16, ge=1, le=1024)
    # Seconds between checks that each source and sink can be reached (status, /readyz,
    # STATUS and darkroom_source_up read them).
    check_interval: float = Field(15.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> MetricsConfig:
        if not self.allow_remote and not _is_loopback(self.host):
            raise ValueError(
                f"metrics.host {self.host!r} is not a loopback address: the endpoints would "
                "be reachable from the network. Use 127.0.0.1 (and a reverse proxy or "
                "ssh -L), or set metrics.allow_remote: true to serve it on purpose"
            )
        return self


class ReviewConfig(_Strict):
    """The review server: the sinks' pages over HTTP, with approve/reject/star/note buttons."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)  # 0 = any free port
    # Anyone who can reach the server can decide: off loopback only with a token (HTTP basic
    # auth, any user name, the token as password; the user name is recorded as "by") and
    # allow_remote set on purpose. Put TLS in front of it (a reverse proxy) on a LAN.
    token: SecretStr | None = None
    allow_remote: bool = False
    timeout: float = Field(10.0, gt=0, le=300)
    max_connections: int = Field(32, ge=1, le=1024)

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> ReviewConfig:
        if not _is_loopback(self.host):
            if not self.allow_remote:
                raise ValueError(
                    f"review.host {self.host!r} is not a loopback address: anyone on the "
                    "network could approve and reject. Use 127.0.0.1 (and ssh -L), or set "
                    "review.allow_remote: true and review.token"
                )
            if self.token is None:
                raise ValueError(
                    "review.allow_remote needs review.token: reviewers then log in with any "
                    "user name and the token as password"
                )
        return self


def _webhook_url(value: str) -> str:
    """http(s)://host only: anything else (file://, ftp://, a bare host) cannot be POSTed to
    and would fail every delivery; the URL is not echoed (it may carry a token)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        scheme = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ValueError(
            f"webhook URLs must be http:// or https:// with a host, not {scheme};"
            " e.g. https://hooks.example.com/darkroom"
        )
    return value


WebhookUrl = Annotated[str, AfterValidator(_webhook_url)]


class WebhooksConfig(_Strict):
    """POSTed when a source's outputs are committed or it fails for good; signed as Standard
    Webhooks (see docs/service.md). The secret belongs in the environment:
    DARKROOM_WEBHOOKS__SECRET, best a ``whsec_<base64>`` one."""

    urls: list[WebhookUrl] = []
    secret: SecretStr | None = None
    timeout: float = Field(10.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=20)
    backoff: float = Field(2.0, ge=0)
    queue_size: int = Field(1000, ge=1)
    # Also send the pre-Standard-Webhooks X-Darkroom-Signature header (kept for one release).
    legacy_signature: bool = False

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            from daemon.service.webhooks import secret_key

            secret_key(value.get_secret_value())  # ValueError says what is wrong and the fix
        return value


class MaintenanceConfig(_Strict):
    """Housekeeping on the daemon's scheduler."""

    retention_days: float = Field(90.0, gt=0)  # finished ledger rows older than this are pruned
    prune_interval: float = Field(6 * 3600.0, gt=0)  # seconds between prunes


class LimitsConfig(_Strict):
    """What one input may cost (docs/security.md): a file over a limit is an input fault,
    refused with a reason that names the limit, before it costs memory or time."""

    max_input_bytes: int = Field(200_000_000, gt=0)  # an input image, checked before reading
    max_sidecar_bytes: int = Field(64 * 1024, gt=0)  # a .txt/.json/.yaml sidecar
    max_prompt_chars: int = Field(4000, gt=0)  # a sidecar's prompt, negative prompt or var
    # The decode limit: width x height of any image decoded (inputs, masks, references),
    # in every process that decodes. Pillow's own default is 89.5 MP.
    max_pixels: int = Field(100_000_000, gt=0)


class C2paConfig(_Strict):
    """C2PA Content Credentials on every output image (docs/rules.md, C2PA section): a
    PEM certificate chain (signing certificate first) and its PEM private key. Needs the
    optional c2pa-python package (pip install 'darkroom[c2pa]')."""

    cert: Path
    key: Path  # a secret: mode 0600, or a systemd credential (docs/security.md)
    alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"
    # An RFC 3161 timestamp authority: signing then needs the network. None: offline.
    timestamp_url: str | None = None


class OutputsConfig(_Strict):
    """What every output carries beyond its provenance record."""

    c2pa: C2paConfig | None = None


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class CredentialsSource(EnvSettingsSource):
    """``DARKROOM_*`` settings from files in ``$CREDENTIALS_DIRECTORY`` (systemd
    ``LoadCredential=DARKROOM_WEBHOOKS__SECRET:/etc/darkroom/credentials/webhook``): a file
    named like the environment variable holds its value, so a secret never sits in the
    environment, where every child process and /proc/<pid>/environ would see it. The
    environment still wins; the YAML file comes after both."""

    def _load_env_vars(self) -> dict[str, str | None]:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory or not os.path.isdir(directory):
            return {}
        found: dict[str, str | None] = {}
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if not entry.name.upper().startswith(ENV_PREFIX) or not entry.is_file():
                continue
            try:
                with open(entry.path, encoding="utf-8") as handle:
                    value = handle.read().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    [
                        Problem(
                            f"credential {entry.path}",
                            f"cannot read it: {getattr(exc, 'strerror', None) or exc}",
                            "check the LoadCredential= line of the unit (docs/security.md)",
                        )
                    ]
                ) from None
            found[entry.name if self.case_sensitive else entry.name.lower()] = value
        return found


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    state_dir: Path = Path(".darkroom")
    rules_dir: Path = Path("rules")
    model_cache: Path | None = None  # where random: models are built; default state_dir/models
    reference_dirs: dict[str, Path] = {}  # named folders of reference images ("brand:faces/*.png")
    rules_reload_interval: float = Field(1.0, ge=0)  # seconds between checks of rules_dir; 0 = off
    sources: dict[str, SourceConfig] = {}
    sinks: dict[str, SinkConfig] = {}
    profiles: dict[str, ProfileConfig] = {}
    worker: WorkerConfig = WorkerConfig()
    jobs: JobsConfig = JobsConfig()
    log: LogConfig = LogConfig()
    digest: DigestConfig = DigestConfig()
    metrics: MetricsConfig = MetricsConfig()
    review: ReviewConfig = ReviewConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    limits: LimitsConfig = LimitsConfig()
    outputs: OutputsConfig = OutputsConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; listing env first gives it precedence.
        # systemd LoadCredential= files come after the environment (docs/security.md).
        return (env_settings, CredentialsSource(settings_cls), init_settings)

    @property
    def models_dir(self) -> Path:
        return self.model_cache or self.state_dir / "models"


_PATH_KEYS = ("state_dir", "rules_dir", "model_cache")


def _absolutize(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the YAML file's relative paths relative to the file's own folder."""

    def fix(value: Any) -> Any:
        return str(base / value) if isinstance(value, str) and value else value

    out = {"state_dir": ".darkroom", "rules_dir": "rules", **data}
    for key in _PATH_KEYS:
        if key in out:
            out[key] = fix(out[key])
    c2pa = out.get("outputs", {}).get("c2pa") if isinstance(out.get("outputs"), dict) else None
    if isinstance(c2pa, dict):  # the signing certificate and key, relative to the file
        out["outputs"] = {
            **out["outputs"],
            "c2pa": {**c2pa, **{k: fix(c2pa[k]) for k in ("cert", "key") if k in c2pa}},
        }
    if isinstance(out.get("reference_dirs"), dict):
        out["reference_dirs"] = {name: fix(path) for name, path in out["reference_dirs"].items()}
    if isinstance(out.get("profiles"), dict):  # a profile's watermark logo, next to the file
        out["profiles"] = {
            name: _with_fixed_watermark(cfg, fix) for name, cfg in out["profiles"].items()
        }
    for group in ("sources", "sinks"):
        entries = out.get(group)
        if isinstance(entries, dict):
            out[group] = {
                name: (
                    {
                        **cfg,
                        **{k: fix(cfg[k]) for k in ("path", "quarantine", "processed") if k in cfg},
                    }
                    if isinstance(cfg, dict)
                    else cfg
                )
                for name, cfg in entries.items()
            }
    return out


def _with_fixed_watermark(cfg: Any, fix: Any) -> Any:
    """A profile's ``defaults``/``options`` watermark made relative to the config file (never
    the daemon's working directory, which a unit file does not pin)."""
    if not isinstance(cfg, dict):
        return cfg
    fixed = dict(cfg)
    for section in ("defaults", "options"):
        values = fixed.get(section)
        if isinstance(values, dict) and isinstance(values.get("watermark"), str):
            fixed[section] = {**values, "watermark": fix(values["watermark"])}
    return fixed


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for model in (
        Settings,
        FolderSourceConfig,
        S3SourceConfig,
        FolderSinkConfig,
        S3SinkConfig,
        ProfileConfig,
        WorkerConfig,
        JobsConfig,
        LogConfig,
        DigestConfig,
        MetricsConfig,
        WebhooksConfig,
        MaintenanceConfig,
        LimitsConfig,
        C2paConfig,
        OutputsConfig,
    ):
        keys.update(model.model_fields)
    return keys


def _env_var_for(loc: tuple[str | int, ...]) -> str | None:
    name = ENV_PREFIX + "__".join(str(p) for p in loc).upper()
    if name in {k.upper() for k in os.environ}:
        return name
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")  # CredentialsSource's files
    if credentials and os.path.isfile(os.path.join(credentials, name)):
        return f"{name} (credential {os.path.join(credentials, name)})"
    return None


def load_settings(config: Path | None) -> Settings:
    """Read the config file (if any) and the environment; every problem at once."""
    data: dict[str, Any] = {}
    positions = yamlfile.Positions("<defaults>")
    if config is not None:
        raw, positions = yamlfile.load(config)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(
                [Problem(f"{config}:1:1", "the config file must be a mapping of keys")]
            )
        data = _absolutize(raw, config.resolve().parent)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems = yamlfile.validation_problems(exc, positions, _known_keys())
        for problem, err in zip(problems, exc.errors(), strict=True):  # one problem per error
            env = _env_var_for(positions.user_loc(err["loc"]))
            if env:
                problems[problems.index(problem)] = Problem(
                    f"environment {env}", problem.message, problem.hint
                )
        raise ConfigError(problems) from None
    return _resolved(settings)


def _resolved(settings: Settings) -> Settings:
    """Absolute paths everywhere, so later code never depends on the working directory."""
    update: dict[str, Any] = {
        key: getattr(settings, key).resolve() for key in ("state_dir", "rules_dir")
    }
    if settings.model_cache is not None:
        update["model_cache"] = settings.model_cache.resolve()
    update["reference_dirs"] = {n: p.resolve() for n, p in settings.reference_dirs.items()}

    def absolute(cfg: Any) -> Any:
        return cfg.model_copy(update={"path": cfg.path.resolve()}) if hasattr(cfg, "path") else cfg

    update["sources"] = {n: absolute(s) for n, s in settings.sources.items()}
    update["sinks"] = {n: absolute(s) for n, s in settings.sinks.items()}
    return settings.model_copy(update=update)
