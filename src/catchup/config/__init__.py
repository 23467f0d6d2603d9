"""The user's `catchup.toml`: typed loading and validation.

Every invalid value becomes one line that names the key, the value, why it is
wrong and what to do, raised as a `ConfigError` (exit code 2).

`Config` and the loading are here; its sections are models in `shards.py`,
`repository.py`, `engines.py` and `daemon.py`, all importable from here.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from catchup.config.base import HttpUrl, Strict
from catchup.config.daemon import (
    DaemonSettings,
    ExecutorSettings,
    KubernetesSettings,
    Schedules,
    ScheduleSettings,
)
from catchup.config.engines import MariaDBSettings, MySQLSettings, PostgresSettings
from catchup.config.repository import (
    ArchiveSettings,
    ChunkSettings,
    Compression,
    EncryptionSettings,
    LockSettings,
    Retention,
    StorageSettings,
)
from catchup.config.shards import NAME_PATTERN, Credentials, Shard
from catchup.errors import ConfigError
from catchup.storage import parse_url

__all__ = [
    "CONFIG_ENV",
    "NAME_PATTERN",
    "ArchiveSettings",
    "ChunkSettings",
    "Compression",
    "Config",
    "Credentials",
    "DaemonSettings",
    "EncryptionSettings",
    "ExecutorSettings",
    "HttpUrl",
    "KubernetesSettings",
    "LockSettings",
    "MariaDBSettings",
    "MySQLSettings",
    "PostgresSettings",
    "Retention",
    "ScheduleSettings",
    "Schedules",
    "Shard",
    "StorageSettings",
    "Strict",
    "describe_error",
    "format_key",
    "load_config",
    "parse_config",
]

CONFIG_ENV = "CATCHUP_CONFIG"


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
    archive: ArchiveSettings = ArchiveSettings()
    compression: Compression = Compression()
    chunks: ChunkSettings = ChunkSettings()
    mariadb: MariaDBSettings = MariaDBSettings()
    mysql: MySQLSettings = MySQLSettings()
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
        parse_url(value)  # a scheme catchup has a store for, naming its bucket
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

    def archived(self, shard: Shard) -> bool:
        """Whether `catchup serve` runs an archiver for `shard`."""
        return self.archive.enabled if shard.archive is None else shard.archive

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
