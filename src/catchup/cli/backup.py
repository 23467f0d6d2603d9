"""`catchup backup`: one cycle for each selected shard."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from catchup.cli.options import ConfigOption, JsonOption
from catchup.cli.output import human_bytes, new_table, out, print_json, quoted, reporting
from catchup.cli.signals import cancellable
from catchup.config import load_config
from catchup.cycle import CycleOptions
from catchup.errors import UsageError
from catchup.fleet.run import ShardResult, backup_fleet, exit_code
from catchup.repository import open_repository


def backup(
    shards: Annotated[list[str] | None, typer.Argument(help="keyspace/shard names.")] = None,
    all_shards: Annotated[bool, typer.Option("--all", help="Every shard in the config.")] = False,
    parallel: Annotated[
        int | None, typer.Option("--parallel", "-p", min=1, help="Shards at once.")
    ] = None,
    no_rebootstrap: Annotated[
        bool,
        typer.Option(
            "--no-rebootstrap", help="Fail instead of bootstrapping again when logs are purged."
        ),
    ] = False,
    force_bootstrap: Annotated[
        bool, typer.Option("--bootstrap", help="Start a new chain from the source.")
    ] = False,
    result_line: Annotated[
        bool,
        typer.Option(
            "--result-line",
            help="Also print each shard's result as one 'CATCHUP_RESULT {json}' line (for Jobs).",
        ),
    ] = False,
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run one backup cycle for each selected shard."""
    if not shards and not all_shards:
        raise UsageError("name the shards to back up, or pass --all")
    if shards and all_shards:
        raise UsageError("give shard names or --all, not both")
    config = load_config(config_path)
    selected = config.select(None if all_shards else shards)
    config.require_passwords(selected)
    options = CycleOptions(rebootstrap=not no_rebootstrap, force_bootstrap=force_bootstrap)
    with cancellable() as cancel, reporting(json_output) as reporter:
        results = backup_fleet(
            config, selected, open_repository(config), options, reporter, cancel, parallel
        )
    if json_output:
        print_json([r.to_json() for r in results])
    else:
        print_backup_summary(results)
    if result_line:
        for result in results:
            sys.stdout.write(result.result_line() + "\n")
    raise typer.Exit(int(exit_code(results, cancel)))


def print_backup_summary(results: list[ShardResult]) -> None:
    table = new_table(
        "Backup cycles",
        [
            "shard",
            "result",
            "kind",
            "backup",
            "position",
            "from source",
            "data",
            "stored",
            "seconds",
        ],
        right=("seconds",),
    )
    for r in results:
        table.add_row(
            quoted(r.shard),
            "[green]ok[/green]" if r.ok else ("[yellow]busy[/yellow]" if r.busy else "[red]FAILED"),
            quoted(r.kind or ""),
            quoted(r.backup_id or ""),
            quoted(r.position or ""),
            human_bytes(r.bytes_from_source) if r.ok else "",
            human_bytes(r.data_bytes) if r.ok else "",
            _stored(r) if r.ok else "",
            f"{r.seconds:.1f}",
        )
    out.print(table)
    for r in results:
        if r.rebootstrap_reason:
            out.print(
                f"[yellow]re-bootstrapped[/yellow] {quoted(r.shard)}: "
                f"{quoted(r.rebootstrap_reason)}"
            )
        if r.error:  # it starts with the shard; markup-escaped, as errors quote anything
            out.print(escape(r.error), style="red")
    failed = sum(not r.ok for r in results)
    out.print(f"{len(results) - failed} of {len(results)} shards backed up")


def _stored(result: ShardResult) -> str:
    """What a restore reads, and (format 3) what this backup added to the store."""
    if result.new_stored_bytes is None:
        return human_bytes(result.stored_bytes)
    return f"{human_bytes(result.stored_bytes)} ({human_bytes(result.new_stored_bytes)} new)"
