"""What most commands take: -c/--config (before or after the command), --json, and
the shard and backup a command names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from catchup.config import Config, Shard
from catchup.engines import LogTarget
from catchup.engines.registry import engine_for
from catchup.errors import UsageError
from catchup.pitr import parse_target
from catchup.repository import Manifest, Repository, open_repository

CONFIG_HELP = "Config file (default: $CATCHUP_CONFIG, else ./catchup.toml)."


def global_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """A command's -c, or the one given before the command (`catchup -c FILE backup`).

    $CATCHUP_CONFIG is read by load_config, after both, so an explicit -c wins over it.
    """
    before = ctx.find_root().params.get("config_path")
    if value is not None and before is not None and value != before:
        raise typer.BadParameter(
            f"given twice, as {before} before the command and {value} after it; give it once"
        )
    return value if value is not None else before


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help=CONFIG_HELP, callback=global_config),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ToTimeOption = Annotated[
    str | None,
    typer.Option(
        "--to-time",
        help="Roll forward from the log archive to this time, inclusive (ISO 8601 with a "
        "zone, e.g. 2026-12-03T10:14:00Z).",
    ),
]
ToPositionOption = Annotated[
    str | None,
    typer.Option(
        "--to-position",
        help="Roll forward from the log archive to this position, inclusive (a GTID "
        "position for MariaDB, an LSN for PostgreSQL).",
    ),
]


def find_backup(
    config: Config, shard: str, backup_id: str | None
) -> tuple[Shard, Repository, Manifest]:
    """The shard, its repository (which keeps the backup's data key) and the backup."""
    selected = config.shard(shard)
    repository = open_repository(config)
    return selected, repository, repository.find(selected.keyspace, selected.shard, backup_id)


def point_in_time(
    config: Config, shard: str, backup_id: str, to_time: str | None, to_position: str | None
) -> tuple[Shard, LogTarget]:
    """The shard and target of `restore`/`verify --to-time/--to-position`."""
    selected = config.shard(shard)
    if backup_id != "latest":
        raise UsageError(
            f"backup id {backup_id!r} with --to-time/--to-position: the base backup is "
            "chosen for you (the newest before the target); leave the id out"
        )
    return selected, parse_target(engine_for(selected.engine), to_time, to_position)
