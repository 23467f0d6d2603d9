"""`catchup serve`: the daemon.

The daemon (uvicorn, FastAPI, the executors) is imported when the command runs, not when
the CLI loads: every other command starts without it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from catchup.cli.options import ConfigOption
from catchup.cli.output import out
from catchup.config import Config, load_config, parse_config
from catchup.repository import open_repository


def serve(
    listen: Annotated[
        str | None, typer.Option("--listen", help="host:port; overrides daemon.listen.")
    ] = None,
    on_terminate: Annotated[
        str | None,
        typer.Option(
            "--on-terminate",
            help="On SIGTERM: 'finish' running cycles or 'abandon' them (they clean up).",
        ),
    ] = None,
    config_path: ConfigOption = None,
) -> None:
    """Run the daemon: schedules, HTTP API, /metrics and a status page."""
    from catchup.daemon.process import serve as serve_daemon

    config = load_config(config_path)
    config = with_daemon_overrides(config, listen, on_terminate)
    if config.executor.kind == "local":  # else the Jobs' pods log in, and read the password
        config.require_passwords(config.shards)
    serve_daemon(config, open_repository(config), config.daemon.on_terminate, announce_url)


def with_daemon_overrides(config: Config, listen: str | None, on_terminate: str | None) -> Config:
    """The config with command-line daemon settings applied, validated like the file."""
    overrides = {k: v for k, v in (("listen", listen), ("on_terminate", on_terminate)) if v}
    if not overrides:
        return config
    data = config.model_dump(mode="python")
    data["daemon"] = {**data["daemon"], **overrides}
    return parse_config(data, source="command line")


def announce_url(url: str) -> None:
    out.print(f"catchup daemon listening on {url}", soft_wrap=True)
