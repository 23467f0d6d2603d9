"""The user's `catchup.toml`: typed loading and validation.

Every invalid value becomes one line that names the key, the value, why it is
wrong and what to do, raised as a `ConfigError` (exit code 2).
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from catchup.errors import ConfigError
from catchup.files import read_private

CONFIG_ENV = "CATCHUP_CONFIG"
# Safe as one path segment everywhere; Vitess-style key ranges ("-80", "80-") included.
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^/]+", value):
        raise ValueError('must be an http(s) URL, e.g. "https://s3.example.internal:9000"')
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class Credentials(Strict):
    """How catchup authenticates to a source. Never a password inline."""

    user: str = "catchup"
    password_env: str | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_password_source(self) -> Credentials:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self

    def password(self) -> SecretStr | None:
        """Read the password now, so a missing one fails before any work starts."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"credentials.password_env = {self.password_env!r}: environment variable "
                    f"is not set; export {self.password_env} or use password_file"
                )
            return SecretStr(value)
        if self.password_file:
            try:
                text = read_private(self.password_file, "credentials.password_file")
                return SecretStr(text.rstrip("\r\n"))
            except OSError as exc:
                raise ConfigError(
                    f"credentials.password_file = '{self.password_file}': cannot be read "
                    f"({exc.strerror}); create it (mode 0600) or fix the path"
                ) from None
        return None


class Shard(Strict):
    keyspace: Annotated[str, Field(pattern=NAME_PATTERN)]
    shard: Annotated[str, Field(pattern=NAME_PATTERN)]
    engine: Literal["mariadb", "postgres"] = "mariadb"
    source: str | None = None
    socket: Path | None = None
    role: Literal["primary", "replica"] = "primary"
    credentials: Credentials | None = None

    @field_validator("source")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError('must be host:port with a port in 1-65535, e.g. "db1:3306"')
        return value

    @model_validator(mode="after")
    def _one_endpoint(self) -> Shard:
        if (self.source is None) == (self.socket is None):
            raise ValueError("give exactly one of source (host:port) or socket (a path)")
        return self

    @property
    def name(self) -> str:
        return f"{self.keyspace}/{self.shard}"

    @property
    def host(self) -> str | None:
        return self.source.rpartition(":")[0] if self.source else None

    @property
    def port(self) -> int | None:
        return int(self.source.rpartition(":")[2]) if self.source else None

    @property
    def endpoint(self) -> str:
        return self.source or f"unix:{self.socket}"


class Retention(Strict):
    min_count: Annotated[int, Field(ge=1)] = 7
    min_age_days: Annotated[float, Field(ge=0)] = 7.0
    # An incomplete prefix younger than this is never removed, even with the shard's lease
    # held: a writer that does not take the lease (an older catchup) may still be uploading.
    incomplete_grace_hours: Annotated[float, Field(ge=0)] = 6.0


class LockSettings(Strict):
    """The shard lease in the repository (fleet/lease.py), renewed every third of it."""

    lease_seconds: Annotated[float, Field(ge=3, le=3600)] = 120.0


class Compression(Strict):
    # Level 1: compression is the pipeline's bottleneck (docs/benchmarks.md); higher
    # levels shrink InnoDB files little for much more CPU. Negative levels are zstd's
    # fast ones: level -1 measured 1.15x the speed for 14% more storage.
    level: Annotated[int, Field(ge=-7, le=22)] = 1
    threads: Annotated[int, Field(ge=0, le=64)] = 0


class StorageSettings(Strict):
    """Options of object-store repositories (s3://, gs://, az://)."""

    endpoint: HttpUrl | None = None  # an S3-compatible endpoint; default: the cloud's own
    region: str | None = None
    path_style: bool = False
    server_side_encryption: Literal["AES256", "aws:kms", "aws:kms:dsse"] | None = None
    kms_key_id: str | None = None
    part_size_mb: Annotated[int, Field(ge=5, le=512)] = 16
    upload_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    download_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    max_retries: Annotated[int, Field(ge=0, le=100)] = 10
    retry_timeout_seconds: Annotated[float, Field(gt=0)] = 180.0
    request_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0


class EncryptionSettings(Strict):
    """Key-encryption keys. New backups use `kms_key` when set, else the first key
    file; every listed key file, `kms_key` and `kms_previous_keys` open older backups."""

    key_files: list[Path] = []
    kms_key: str | None = None  # a KMS key id, ARN or alias/…
    # KMS keys (id, ARN or alias/…) that older backups may be wrapped with, e.g. the key an
    # alias named before it was pointed at a new one. No other KMS key is ever used.
    kms_previous_keys: list[str] = []
    kms_region: str | None = None
    kms_endpoint: HttpUrl | None = None  # e.g. a VPC endpoint; default: the region's own
    # With keys configured, a manifest that is not encrypted is refused (anyone who may
    # write to the store could have planted it), unless its backup is dated before this:
    # the time encryption was turned on, so that older plain backups stay readable.
    read_unencrypted_before: AwareDatetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _replaced_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "read_unencrypted_backups" in data:
            raise ValueError(
                "read_unencrypted_backups was replaced: remove it and set "
                "read_unencrypted_before = <the time encryption was turned on, RFC 3339, "
                "e.g. 2026-11-01T00:00:00Z> to read plain backups made before it"
            )
        return data

    @field_validator("read_unencrypted_before")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        # A cutoff ahead of now would let a planted plain manifest with a current id in.
        if value is not None and value > datetime.now(UTC):
            raise ValueError(
                "is in the future; set it to the time encryption was turned on, at the latest now"
            )
        return value

    @model_validator(mode="after")
    def _previous_keys_need_a_key(self) -> EncryptionSettings:
        if self.kms_previous_keys and not (self.kms_key or self.key_files):
            raise ValueError(
                "kms_previous_keys is set but neither kms_key nor key_files: it only opens "
                "older backups and cannot encrypt new ones (catchup would then refuse its own "
                "plain backups); set kms_key to the current KMS key, or remove kms_previous_keys"
            )
        return self


class MariaDBSettings(Strict):
    """Knobs for the ephemeral MariaDB servers (not the source)."""

    binaries: Path | None = None  # directory with mariadbd etc.; default: PATH and /usr/sbin
    buffer_pool_mb: Annotated[int, Field(ge=16)] = 256
    redo_log_mb: Annotated[int, Field(ge=16)] = 256  # during catch-up
    archive_redo_log_mb: Annotated[int, Field(ge=16)] = 16  # shrunk to this before archiving
    # zlib on the replication stream: the source spends a little CPU to send fewer bytes.
    compress_replication: bool = True
    # Optimistic parallel apply for hosts with cores to spare; no gain measured on 2 cores.
    replica_parallel_threads: Annotated[int, Field(ge=0, le=64)] = 0


class PostgresSettings(Strict):
    """Knobs for the ephemeral PostgreSQL servers (not the source)."""

    binaries: Path | None = None  # a bin dir; default: /usr/lib/postgresql/<source major>/bin
    shared_buffers_mb: Annotated[int, Field(ge=16)] = 256
    # Bootstrap again when the WAL since the last backup exceeds this x the database size:
    # a fresh base backup then costs the source less than streaming that WAL.
    rebootstrap_wal_ratio: Annotated[float, Field(gt=0)] = 1.0


WINDOW_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$"


class ScheduleSettings(Strict):
    """When the daemon backs a shard up. Unset keys inherit from the broader level."""

    cron: str | None = None  # e.g. "0 */6 * * *"; no cron: only on request
    window: str | None = None  # "01:00-05:00"; may span midnight: "22:00-04:00"
    timezone: str | None = None  # of cron and window; default UTC
    min_interval_minutes: Annotated[float | None, Field(ge=0)] = None
    jitter_seconds: Annotated[float | None, Field(ge=0)] = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError('is not a cron expression; write five fields, e.g. "0 2 * * *"')
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None and not re.match(WINDOW_PATTERN, value):
            raise ValueError('must be "HH:MM-HH:MM" in 24-hour time, e.g. "01:00-05:00"')
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    'is not a time zone; use an IANA name, e.g. "Europe/Paris"'
                ) from None
        return value


class Schedules(ScheduleSettings):
    """The fleet's schedule, with overrides per keyspace and per "keyspace/shard"."""

    keyspaces: dict[str, ScheduleSettings] = {}
    shards: dict[str, ScheduleSettings] = {}


class DaemonSettings(Strict):
    listen: str = "127.0.0.1:8420"
    token_file: Path | None = None  # the API's bearer token; else $token_env
    token_env: str = "CATCHUP_API_TOKEN"
    max_concurrent: Annotated[int | None, Field(ge=1, le=256)] = None  # default: parallel
    on_terminate: Literal["finish", "abandon"] = "finish"  # running cycles on SIGTERM
    history: Annotated[int, Field(ge=1, le=1000)] = 30  # cycles kept per shard for the page
    tls_cert: Path | None = None  # PEM certificate (chain) the API serves HTTPS with
    tls_key: Path | None = None  # its private key (PEM), 0600 or root-owned 0640

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError('must be host:port, e.g. "127.0.0.1:8420" (port 0: any free one)')
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> DaemonSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for HTTPS, or neither")
        return self

    def tls_files(self) -> tuple[Path, Path] | None:
        """The certificate and key to serve HTTPS with, the key's mode checked now."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        try:
            read_private(self.tls_key, "daemon.tls_key")
        except OSError as exc:
            raise ConfigError(
                f"daemon.tls_key = '{self.tls_key}': cannot be read ({exc.strerror}); "
                "fix the path or the file's owner"
            ) from None
        return self.tls_cert, self.tls_key

    def token(self) -> SecretStr:
        """The API token, read now so a missing one stops the daemon before it listens."""
        if self.token_file:
            try:
                value = read_private(self.token_file, "daemon.token_file").strip()
            except OSError as exc:
                raise ConfigError(
                    f"daemon.token_file = '{self.token_file}': cannot be read ({exc.strerror}); "
                    "create it (mode 0600) with a long random token"
                ) from None
        else:
            value = os.environ.get(self.token_env, "").strip()
        if len(value) < 16:
            where = (
                f"daemon.token_file '{self.token_file}'"
                if self.token_file
                else (f"${self.token_env}")
            )
            raise ConfigError(
                f"{where}: the API token is missing or shorter than 16 characters; "
                "set it, e.g. from `openssl rand -hex 32`"
            )
        return SecretStr(value)


class ExecutorSettings(Strict):
    """Where the daemon runs cycles, and how long and how often it tries."""

    kind: Literal["local", "kubernetes"] = "local"
    retries: Annotated[int, Field(ge=0, le=10)] = 0  # more attempts after a failed one
    deadline_minutes: Annotated[float, Field(gt=0)] = 360.0  # then the cycle is stopped
    retry_delay_seconds: Annotated[float, Field(ge=0)] = 30.0  # local; Kubernetes backs off itself


class KubernetesSettings(Strict):
    """The Jobs of `executor.kind = "kubernetes"` (see deploy/kubernetes/)."""

    namespace: str = "catchup"
    image: str = "catchup:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str = "catchup-cycle"
    config_map: str = "catchup-config"  # holds catchup.toml, mounted at /etc/catchup/config
    secret: str = "catchup-secrets"  # passwords and key files, at /etc/catchup/secrets
    env_secret: str | None = None  # its keys become env vars (object-store credentials)
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"
    storage_class: str | None = None  # of the work volume; default: the cluster's
    work_volume_factor: Annotated[float, Field(ge=1)] = 2.5  # x the shard's last data size
    work_volume_min_gb: Annotated[float, Field(gt=0)] = 10.0
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] = 3600
    watch_seconds: Annotated[int, Field(ge=1, le=3600)] = 5  # each watch; bounds cancel latency
    kubeconfig: Path | None = None  # default: the in-cluster service account


class Config(Strict):
    repository: str
    work_dir: Path = Path("/var/lib/catchup/work")
    parallel: Annotated[int, Field(ge=1, le=256)] = 2
    jobs: Annotated[int, Field(ge=1, le=64)] = 4
    stall_timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    # A shard's source is another server than at its newest backup (a failover, say).
    on_source_change: Literal["warn", "refuse"] = "warn"
    credentials: Credentials = Credentials()
    retention: Retention = Retention()
    lock: LockSettings = LockSettings()
    compression: Compression = Compression()
    mariadb: MariaDBSettings = MariaDBSettings()
    postgres: PostgresSettings = PostgresSettings()
    storage: StorageSettings = StorageSettings()
    encryption: EncryptionSettings = EncryptionSettings()
    schedule: Schedules = Schedules()
    daemon: DaemonSettings = DaemonSettings()
    executor: ExecutorSettings = ExecutorSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    shards: Annotated[list[Shard], Field(min_length=1)]

    @field_validator("repository")
    @classmethod
    def _repository_url(cls, value: str) -> str:
        scheme = re.match(r"^([a-z][a-z0-9+.-]*)://([^/]*)", value)
        if scheme and scheme.group(1) not in ("file", "s3", "gs", "az"):
            raise ValueError(
                f"scheme {scheme.group(1)}:// is not supported; use a directory path, file://, "
                "s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
            )
        if scheme and scheme.group(1) != "file" and not scheme.group(2):
            raise ValueError("names no bucket; write it as s3://bucket/prefix")
        return value

    @model_validator(mode="after")
    def _unique_shards(self) -> Config:
        seen: set[str] = set()
        for index, shard in enumerate(self.shards):
            if shard.name in seen:
                raise ValueError(f"shards[{index}]: {shard.name} is listed twice; remove one")
            seen.add(shard.name)
        for name in self.schedule.shards:
            if name not in seen:
                raise ValueError(f"schedule.shards.{name!r}: no such shard; use keyspace/shard")
        keyspaces = {shard.keyspace for shard in self.shards}
        for name in self.schedule.keyspaces:
            if name not in keyspaces:
                raise ValueError(f"schedule.keyspaces.{name!r}: no shard has this keyspace")
        return self

    def credentials_for(self, shard: Shard) -> Credentials:
        return shard.credentials or self.credentials

    def login(self, shard: Shard) -> tuple[str, str | None]:
        """The user and password catchup logs in to `shard`'s source with."""
        credentials = self.credentials_for(shard)
        secret = credentials.password()
        return credentials.user, secret.get_secret_value() if secret else None

    def require_passwords(self, shards: list[Shard]) -> None:
        """Fail now, with a config error, if any selected shard's password cannot be read."""
        for shard in shards:
            self.credentials_for(shard).password()

    def select(self, names: list[str] | None) -> list[Shard]:
        """The shards named `keyspace/shard` (or just `shard` when unambiguous); all if None."""
        if not names:
            return list(self.shards)
        return [self.shard(name) for name in names]

    def shard(self, name: str) -> Shard:
        matches = [s for s in self.shards if name in (s.name, s.shard)]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(s.name for s in self.shards)
        why = "matches several shards" if matches else "is not in the config"
        raise ConfigError(f"shard {name!r} {why}; use keyspace/shard, one of: {known}")


def load_config(path: Path | str | None) -> Config:
    """Read and validate a config file given by path or $CATCHUP_CONFIG."""
    path = Path(path or os.environ.get(CONFIG_ENV) or "catchup.toml")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"config file '{path}' does not exist; pass -c/--config or set {CONFIG_ENV}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file '{path}' cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    return parse_config(data, source=str(path))


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {describe_error(err, data)}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def describe_error(err: Any, data: dict[str, Any]) -> str:
    """One line: key = value: why; what to do."""
    loc = [part for part in err["loc"] if not str(part).startswith("function-")]
    key = format_key(loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return f"{key}: is required but missing; add it"
    if kind == "extra_forbidden":
        return f"{key}: unknown key; remove it or check its spelling"
    why = err["msg"].removeprefix("Value error, ")
    fix = FIXES.get(kind, "").format(**ctx)
    shown = f" = {err['input']!r}" if key and not isinstance(err["input"], dict) else ""
    return f"{key or 'config'}{shown}: {why}" + (f"; {fix}" if fix else "")


FIXES = {
    "string_pattern_mismatch": "use letters, digits, '_', '.' or '-', not starting with '.'",
    "literal_error": "choose one of the allowed values",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "float_parsing": "write a number",
    "greater_than_equal": "raise it to at least {ge}",
    "less_than_equal": "lower it to at most {le}",
    "greater_than": "use a value above {gt}",
    "too_short": "add at least one",
    "string_type": "quote it as a string",
    "bool_type": "write true or false",
    "list_type": "use an array of tables, e.g. [[shards]]",
    "model_type": "use a table, e.g. [section]",
    "timezone_aware": "add a zone, e.g. 2026-11-01T00:00:00Z",
}


def format_key(loc: list[Any]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key
