"""`catchup archive`: one shard's log archiver, in the foreground (for a systemd unit or
a Kubernetes Deployment; `catchup serve` runs the same archiver for every shard)."""

from __future__ import annotations

from typing import Annotated

import typer

from catchup.cli.options import ConfigOption
from catchup.cli.output import out, quoted
from catchup.cli.signals import cancellable
from catchup.config import load_config
from catchup.errors import ExitCode, UsageError
from catchup.fleet.archiver import ArchiverStatus, supervise
from catchup.repository import open_repository


def archive(
    shard: Annotated[str, typer.Argument(help="keyspace/shard.")],
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="Stop at the first failure instead of restarting with backoff."
        ),
    ] = False,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            help="Serve the archive's Prometheus metrics on HOST:PORT (e.g. 0.0.0.0:9420).",
        ),
    ] = None,
    config_path: ConfigOption = None,
) -> None:
    """Stream a shard's log into the repository until stopped (SIGTERM, Ctrl-C)."""
    config = load_config(config_path)
    host, _, port = (metrics_listen or "").rpartition(":")
    if metrics_listen is not None and not (host and port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(
            f"--metrics-listen {metrics_listen!r} is not HOST:PORT; e.g. 127.0.0.1:9420"
        )
    selected = config.shard(shard)
    config.require_passwords([selected])
    repository = open_repository(config)
    repository.check_encryption()
    status = ArchiverStatus(selected.name)
    if metrics_listen is not None:
        serve_metrics(host, int(port), status)
    out.print(
        quoted(
            f"Archiving {selected.name} into {repository.url} (stored every "
            f"{config.archive.flush_seconds:g} s); stop with Ctrl-C or SIGTERM"
        )
    )
    with cancellable() as cancel:
        supervise(config, selected, repository, cancel, status, once=once)
    out.print(
        quoted(
            f"Stopped: {status.pieces} pieces, {status.archived_bytes} bytes archived, up to "
            f"{status.position or '(nothing)'}"
            + (f"; last error: {status.error}" if status.error else "")
        )
    )
    if once and status.error:
        raise typer.Exit(ExitCode.BUSY if status.state == "waiting" else ExitCode.FAILED)


def serve_metrics(host: str, port: int, status: ArchiverStatus) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    from catchup.daemon.metrics import ArchiveCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ArchiveCollector({status.shard: status}))
    try:
        start_http_server(port, host, registry)
    except OSError as exc:
        raise UsageError(
            f"--metrics-listen {host}:{port}: cannot listen ({exc.strerror})"
        ) from None
