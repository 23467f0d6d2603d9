"""`catchup verify`: prove a backup restores and reads, or (--deep) that every object is intact."""

from __future__ import annotations

from typing import Annotated

import typer

from catchup.cli.options import ConfigOption, JsonOption, find_backup
from catchup.cli.output import out, print_findings, print_json, quoted
from catchup.cli.signals import cancellable
from catchup.config import load_config
from catchup.errors import ExitCode
from catchup.verification import check_stored_objects, verify_backup


def verify(
    shard: Annotated[str, typer.Argument(help="keyspace/shard.")],
    backup_id: Annotated[str, typer.Argument(help="A backup id, or 'latest'.")] = "latest",
    deep: Annotated[
        bool,
        typer.Option(
            "--deep", help="Only re-read every stored object (authenticity, hashes); no server."
        ),
    ] = False,
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Restore a backup into an ephemeral instance, start it and check every table."""
    config = load_config(config_path)
    selected, repository, manifest = find_backup(config, shard, backup_id)
    with cancellable() as cancel:
        if deep:
            report = check_stored_objects(config, selected, repository, manifest)
        else:
            report = verify_backup(config, selected, repository, manifest, cancel)
    if json_output:
        print_json(report.to_json())
    else:
        print_findings(f"Verify {quoted(shard)} {quoted(manifest.backup_id)}", report.findings)
        out.print("[green]verified[/green]" if report.ok else "[red]verification FAILED[/red]")
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.FAILED)
