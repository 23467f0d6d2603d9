"""`catchup archive`: one shard's log archiver, in the foreground (for a systemd unit or
a Kubernetes Deployment; `catchup serve` runs the same archiver for every shard)."""

from __future__ import annotations

from typing import Annotated

import typer

from catchup.cli.options import ConfigOption
from catchup.cli.output import out, quoted
from catchup.cli.signals import cancellable
from catchup.config import load_config
from catchup.errors import ExitCode
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
    config_path: ConfigOption = None,
) -> None:
    """Stream a shard's log into the repository until stopped (SIGTERM, Ctrl-C)."""
    config = load_config(config_path)
    selected = config.shard(shard)
    config.require_passwords([selected])
    repository = open_repository(config)
    repository.check_encryption()
    status = ArchiverStatus(selected.name)
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
