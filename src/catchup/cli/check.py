"""`catchup check`: presents the findings of `catchup.checks`."""

from __future__ import annotations

from typing import Annotated

import typer

from catchup.checks import check_fleet
from catchup.cli.options import ConfigOption, JsonOption
from catchup.cli.output import print_findings, print_json, quoted
from catchup.config import load_config
from catchup.errors import ExitCode
from catchup.repository import open_repository


def check(
    shards: Annotated[list[str] | None, typer.Argument(help="keyspace/shard names.")] = None,
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check config, connectivity, privileges and binlog coverage for each shard."""
    config = load_config(config_path)
    report = check_fleet(config, open_repository(config), shards)
    healthy = all(f.ok for findings in report.values() for f in findings)
    if json_output:
        print_json({name: [f.__dict__ for f in fs] for name, fs in report.items()})
    else:
        for name, findings in report.items():
            print_findings(quoted(name), findings)
    raise typer.Exit(ExitCode.OK if healthy else ExitCode.FAILED)
