"""`catchup prune`: retention, and incomplete leftovers."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from catchup.cli.options import ConfigOption, JsonOption
from catchup.cli.output import out, print_json, quoted
from catchup.config import load_config
from catchup.fleet.prune import prune
from catchup.repository import open_repository


def prune_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Apply retention and remove incomplete leftovers."""
    config = load_config(config_path)
    result = prune(
        open_repository(config),
        config.work_dir,
        config.retention.min_count,
        timedelta(days=config.retention.min_age_days),
        dry_run,
        incomplete_grace=timedelta(hours=config.retention.incomplete_grace_hours),
        lease_seconds=config.lock.lease_seconds,
        pitr=timedelta(days=config.retention.pitr_days),
    )
    if json_output:
        print_json(
            {
                "dry_run": dry_run,
                "removed": result.removed,
                "skipped": result.skipped,
                "kept": result.kept,
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    for entry in result.removed:
        out.print(quoted(f"{verb} {entry['shard']} {entry['id']} ({entry['reason']})"))
    for entry in result.skipped:
        out.print(quoted(f"skipped {entry['shard']} {entry['id']} ({entry['reason']})"))
    out.print(f"{len(result.removed)} {verb}, {result.kept} complete backups kept")
