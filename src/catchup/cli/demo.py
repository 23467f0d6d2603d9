"""`catchup demo`: back up a sandbox fleet, restore a shard, and show what it cost.

The sandboxes (`catchup.demo`) and the daemon are imported when the command runs, not
when the CLI loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from catchup.cli.options import JsonOption
from catchup.cli.output import err, human_bytes, new_table, out, print_json, reporting
from catchup.cli.serve import announce_url
from catchup.cli.signals import cancellable
from catchup.config import load_config
from catchup.errors import ExitCode, UsageError
from catchup.repository import open_repository

if TYPE_CHECKING:
    from catchup.demo.run import DemoResult
    from catchup.fleet.run import ShardResult


def demo(
    shards: Annotated[int, typer.Option("--shards", min=1, max=64, help="Sandbox shards.")] = 4,
    size: Annotated[float, typer.Option("--size", min=1, help="MB of data per shard.")] = 100,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the fleet running.")] = False,
    serve: Annotated[
        bool,
        typer.Option("--serve", help="Then run the daemon over the fleet until Ctrl-C."),
    ] = False,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the sandbox, repository and config go.")
    ] = Path("catchup-demo"),
    engine: Annotated[
        str,
        typer.Option("--engine", help="mariadb, mysql, postgres, or mixed (the three in turn)."),
    ] = "mariadb",
    json_output: JsonOption = False,
) -> None:
    """Back up a local sandbox fleet twice, restore a shard and prove it equal to its source."""
    from catchup.demo.run import DemoOptions, run_demo

    if engine not in ("mariadb", "mysql", "postgres", "mixed"):
        raise UsageError(
            f"--engine {engine!r} is not one of mariadb, mysql, postgres, mixed; pick one"
        )
    options = DemoOptions(
        shards=shards, size_mb=size, directory=directory, keep=keep or serve, engine=engine
    )

    def say(text: str) -> None:
        if not json_output:
            err.print(f"[bold cyan]»[/bold cyan] {text}")

    with cancellable() as cancel, reporting(json_output) as reporter:
        result = run_demo(options, reporter, cancel, say)
    if json_output:
        print_json(demo_rows(result))
    else:
        print_demo_summary(result)
    if serve and result.ok:
        serve_demo(result, say)
    elif keep and not json_output:
        out.print(
            f"\nThe sandbox fleet is still running. Try:\n"
            f"  export CATCHUP_CONFIG={result.config_path}\n"
            "  catchup list; catchup check; catchup backup --all; catchup prune --dry-run"
        )
    raise typer.Exit(ExitCode.OK if result.ok else ExitCode.FAILED)


def serve_demo(result: DemoResult, say: Callable[[str], None]) -> None:
    """Run the daemon over the demo fleet until SIGINT/SIGTERM, then stop the fleet."""
    from catchup.daemon.process import serve as serve_daemon
    from catchup.demo.run import SERVE_SCHEDULE, serve_settings, stop_fleet, writing

    token_file = serve_settings(result)
    config = load_config(result.config_path)

    def announce(url: str) -> None:
        announce_url(url)
        out.print(f"status page: {url} (API token in {token_file}); Ctrl-C stops everything")

    say(f"Serving the fleet: a cycle of every shard at '{SERVE_SCHEDULE}', writes every minute")
    try:
        with writing(result.sources):
            serve_daemon(config, open_repository(config), config.daemon.on_terminate, announce)
    finally:
        stop_fleet(result.sources)


def with_share(result: DemoResult) -> Iterator[tuple[int, ShardResult, float | None]]:
    """Each cycle, with what it read from the source as a percentage of its shard's full
    dump (the bootstrap), when the shard has one."""
    full_dump = {r.shard: r.bytes_from_source for c, r in result.cycles if r.kind == "bootstrap"}
    for cycle, r in result.cycles:
        base = full_dump.get(r.shard) or 0
        yield cycle, r, round(100 * r.bytes_from_source / base, 2) if base else None


def demo_rows(result: DemoResult) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {
            "shard": r.shard,
            "cycle": cycle,
            "kind": r.kind,
            "ok": r.ok,
            "position": r.position,
            "bytes_from_source": r.bytes_from_source,
            "data_bytes": r.data_bytes,
            "stored_bytes": r.stored_bytes,
            "new_stored_bytes": r.new_stored_bytes,
            "percent_of_full_dump": share,
            "seconds": r.seconds,
            "durations": r.durations,
            "error": r.error,
            "rpo_seconds": result.rpo_seconds.get(r.shard),
        }
        for cycle, r, share in with_share(result)
    ]
    rows.append(
        {
            "verified": result.verified,
            "pitr_verified": result.pitr_verified,
            "pitr_checks": [
                {
                    "shard": proof.shard,
                    "to_time": proof.target.isoformat(),
                    "backup_id": proof.backup_id,
                    "position": proof.position,
                    "verified": proof.ok,
                    "checksums_equal": proof.checksums_equal,
                    "error": proof.error,
                }
                for proof in result.pitr_proofs
            ],
            "checks": [
                {
                    "shard": proof.shard,
                    "backup_id": proof.backup_id,
                    "verified": proof.ok,
                    "position_equal": proof.position_equal,
                    "checksums_equal": proof.checksums_equal,
                    "tables_compared": proof.tables_compared,
                }
                for proof in result.proofs
            ],
        }
    )
    return rows


def print_demo_summary(result: DemoResult) -> None:
    table = new_table(
        "catchup demo: two cycles per shard",
        [
            "shard",
            "cycle",
            "kind",
            "position",
            "data",
            "from source",
            "% of full dump",
            "seconds",
            "steps",
        ],
        right=(
            "seconds",
            "% of full dump",
        ),
    )
    for cycle, r, share in with_share(result):
        steps = " ".join(f"{k}={v:.1f}" for k, v in (r.durations or {}).items())
        table.add_row(
            str(r.shard),
            str(cycle),
            str(r.kind or "[red]failed"),
            str(r.position or ""),
            human_bytes(r.data_bytes),
            human_bytes(r.bytes_from_source),
            f"{share:.1f}" if share is not None else "",
            f"{r.seconds:.1f}",
            steps or str(r.error or ""),
        )
    out.print(table)
    for pitr in result.pitr_proofs:
        if pitr.ok:
            out.print(
                f"[green]verified[/green]: {pitr.shard} restored to {pitr.target.isoformat()}"
                f" (mid-workload) from backup {pitr.backup_id} and the archive; every table "
                "equals the source's state at that moment"
            )
        else:
            out.print(
                f"[red]NOT verified[/red]: {pitr.shard} at {pitr.target.isoformat()}: "
                f"{pitr.error or 'tables differ from the source at that moment'}"
            )
    rpo = result.rpo_seconds
    if rpo:
        worst = max((v for v in rpo.values() if v is not None), default=None)
        missing = [name for name, v in rpo.items() if v is None]
        out.print(
            "RPO at the end of the workload (until the archive held it): "
            + (f"{worst:.1f} s at worst" if worst is not None else "not reached")
            + (f"; never reached for {', '.join(missing)}" if missing else "")
        )
    for proof in result.proofs:
        if proof.ok:
            out.print(
                f"[green]verified[/green]: {proof.shard} backup {proof.backup_id} restored;"
                f" position and the contents of all {proof.tables_compared} tables equal the "
                "source"
            )
        else:
            out.print(
                f"[red]NOT verified[/red]: {proof.shard}: position equal "
                f"{proof.position_equal}, checksums equal {proof.checksums_equal}"
            )
