"""`catchup restore`: a backup into a data dir a stock server starts on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from catchup.cli.options import ConfigOption, JsonOption, find_backup
from catchup.cli.output import human_bytes, out, print_json, quoted
from catchup.cli.signals import cancellable
from catchup.config import load_config
from catchup.engines.registry import engine_for


def restore(
    shard: Annotated[str, typer.Argument(help="keyspace/shard.")],
    backup_id: Annotated[str, typer.Argument(help="A backup id, or 'latest'.")] = "latest",
    target_dir: Annotated[
        Path, typer.Option("--target-dir", "-t", help="An empty or new directory.")
    ] = ...,  # type: ignore[assignment]
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Restore a backup into a data dir a stock server starts on."""
    config = load_config(config_path)
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
