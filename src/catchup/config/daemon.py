"""Settings of `catchup serve`: schedules, the API, and where cycles run."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import Field, SecretStr, field_validator, model_validator

from catchup.config.base import Strict
from catchup.errors import ConfigError
from catchup.files import read_private

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
