"""The shards to back up, and the credentials catchup logs in to their sources with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from catchup.config.base import Strict
from catchup.errors import ConfigError
from catchup.files import read_private

# Safe as one path segment everywhere; Vitess-style key ranges ("-80", "80-") included.
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"


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
    engine: Literal["mariadb", "mysql", "postgres"] = "mariadb"
    source: str | None = None
    socket: Path | None = None
    role: Literal["primary", "replica"] = "primary"
    credentials: Credentials | None = None
    archive: bool | None = None  # run its log archiver in `catchup serve`; default archive.enabled

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
