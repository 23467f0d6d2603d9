"""`catchup restore`: a backup into a data dir a stock server starts on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from catchup.cli.options import (
    ConfigOption,
    JsonOption,
    ToPositionOption,
    ToTimeOption,
    find_backup,
    point_in_time,
)
from catchup.cli.output import human_bytes, out, print_json, quoted
from catchup.cli.signals import cancellable
from catchup.config import Config, load_config
from catchup.engines.registry import engine_for
from catchup.pitr import hand_over, replay_to
from catchup.repository import open_repository


def restore(
    shard: Annotated[str, typer.Argument(help="keyspace/shard.")],
    backup_id: Annotated[str, typer.Argument(help="A backup id, or 'latest'.")] = "latest",
    target_dir: Annotated[
        Path, typer.Option("--target-dir", "-t", help="An empty or new directory.")
    ] = ...,  # type: ignore[assignment]
    to_time: ToTimeOption = None,
    to_position: ToPositionOption = None,
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Restore a backup into a data dir a stock server starts on; with --to-time or
    --to-position, the newest backup before it, rolled forward from the log archive."""
    config = load_config(config_path)
    if to_time is not None or to_position is not None:
        restore_to_point(config, shard, backup_id, target_dir, to_time, to_position, json_output)
        return
    _, repository, manifest = find_backup(config, shard, backup_id)
    with cancellable():
        repository.restore(manifest, target_dir, config.jobs)
        hint = engine_for(manifest.engine).prepare_restored(target_dir, manifest.position)
    if json_output:
        print_json({"restored": manifest.summary(), "target_dir": str(target_dir.absolute())})
        return
    out.print(
        quoted(
            f"Restored {manifest.shard_name} backup {manifest.backup_id} ({manifest.kind}, "
            f"{human_bytes(manifest.data_bytes)}, every file's hash checked) into "
            f"{target_dir}.\nPosition: {manifest.position}\n{hint}"
        )
    )


def restore_to_point(
    config: Config,
    shard: str,
    backup_id: str,
    target_dir: Path,
    to_time: str | None,
    to_position: str | None,
    json_output: bool,
) -> None:
    selected, target = point_in_time(config, shard, backup_id, to_time, to_position)
    repository = open_repository(config)
    with cancellable() as cancel:
        result = replay_to(config, selected, repository, target, cancel, hand_over(target_dir))
    if json_output:
        print_json({**result.to_json(), "target_dir": str(target_dir.absolute())})
        return
    out.print(
        quoted(
            f"Restored {selected.name} to {target.describe()}: backup {result.backup_id}, then "
            f"{result.log_files} archived log files ({human_bytes(result.log_bytes)}) replayed "
            f"up to position {result.position}; the server was shut down cleanly. Data dir: "
            f"{target_dir}.\n{result.hint}"
        )
    )
