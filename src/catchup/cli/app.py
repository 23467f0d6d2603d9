"""The Typer app: global options, and every command registered in `--help` order.

A new command is a module in this package holding one function; register it below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from catchup import __version__
from catchup.cli import archive, backup, catalog, check, demo, keygen, prune, restore, serve, verify
from catchup.cli.options import CONFIG_HELP
from catchup.cli.output import err, out, user_errors
from catchup.errors import ExitCode
from catchup.log import setup_logging

app = typer.Typer(
    name="catchup",
    help="Consistent backups of database shards that cost the source only the log delta.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def print_version(value: bool) -> None:
    # Eager: runs while the options are parsed, before a missing command is an error.
    if value:
        out.print(__version__)
        raise typer.Exit()


@app.callback()
def main_options(
    log_format: Annotated[
        str, typer.Option("--log-format", help="Log lines as 'text' or 'json'.")
    ] = "text",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    config_path: Annotated[
        Path | None, typer.Option("--config", "-c", help=CONFIG_HELP + " Or after the command.")
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version.", is_eager=True, callback=print_version),
    ] = False,
) -> None:
    if log_format not in ("text", "json"):
        err.print(f"error: --log-format {log_format!r} is not 'text' or 'json'; pick one")
        raise typer.Exit(ExitCode.USAGE)
    setup_logging(log_format, verbose)


COMMANDS: list[tuple[str, Callable[..., None]]] = [
    ("backup", backup.backup),
    ("list", catalog.list_backups),
    ("show", catalog.show),
    ("restore", restore.restore),
    ("verify", verify.verify),
    ("keygen", keygen.keygen),
    ("prune", prune.prune_command),
    ("archive", archive.archive),
    ("check", check.check),
    ("serve", serve.serve),
    ("demo", demo.demo),
]
for _name, _command in COMMANDS:
    app.command(_name)(user_errors(_command))


def main() -> None:
    app()
