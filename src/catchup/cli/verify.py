"""`catchup verify`: prove a backup restores and reads, or (--deep) that every object is intact."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer

from catchup.cli.options import (
    ConfigOption,
    JsonOption,
    ToPositionOption,
    ToTimeOption,
    find_backup,
    point_in_time,
)
from catchup.cli.output import out, print_findings, print_json, quoted
from catchup.cli.signals import cancellable
from catchup.config import Config, load_config
from catchup.errors import ExitCode, UsageError
from catchup.pitr import check_instance, replay_to
from catchup.repository import open_repository
from catchup.verification import check_stored_backups, check_stored_objects, verify_backup


def verify(
    shard: Annotated[str, typer.Argument(help="keyspace/shard.")],
    backup_id: Annotated[
        str,
        typer.Argument(
            help="A backup id, or 'latest'; with --deep also 'all': every backup of the shard, "
            "each shared chunk read once."
        ),
    ] = "latest",
    deep: Annotated[
        bool,
        typer.Option(
            "--deep", help="Only re-read every stored object (authenticity, hashes); no server."
        ),
    ] = False,
    to_time: ToTimeOption = None,
    to_position: ToPositionOption = None,
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Restore a backup into an ephemeral instance, start it and check every table; with
    --to-time or --to-position, roll it forward from the log archive first."""
    config = load_config(config_path)
    if to_time is not None or to_position is not None:
        verify_at_point(config, shard, backup_id, to_time, to_position, json_output)
    if backup_id == "all" and not deep:
        raise UsageError("backup id 'all' needs --deep; name one backup (or 'latest') to verify")
    selected, repository, manifest = find_backup(
        config, shard, "latest" if backup_id == "all" else backup_id
    )
    with cancellable() as cancel:
        if deep and backup_id == "all":
            every = repository.backups(selected.keyspace, selected.shard)
            report = check_stored_backups(config, selected, repository, every)
        elif deep:
            report = check_stored_objects(config, selected, repository, manifest)
        else:
            report = verify_backup(config, selected, repository, manifest, cancel)
    if json_output:
        print_json(report.to_json())
    else:
        print_findings(f"Verify {quoted(shard)} {quoted(manifest.backup_id)}", report.findings)
        out.print("[green]verified[/green]" if report.ok else "[red]verification FAILED[/red]")
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.FAILED)


def verify_at_point(
    config: Config,
    shard: str,
    backup_id: str,
    to_time: str | None,
    to_position: str | None,
    json_output: bool,
) -> NoReturn:
    selected, target = point_in_time(config, shard, backup_id, to_time, to_position)
    with cancellable() as cancel:
        result = replay_to(
            config, selected, open_repository(config), target, cancel, check_instance(False)
        )
    ok = all(f.ok for f in result.findings)
    if json_output:
        print_json(result.to_json())
    else:
        title = f"Verify {quoted(shard)} at {quoted(target.describe())} from {result.backup_id}"
        print_findings(title, result.findings)
        out.print("[green]verified[/green]" if ok else "[red]verification FAILED[/red]")
    raise typer.Exit(ExitCode.OK if ok else ExitCode.FAILED)
