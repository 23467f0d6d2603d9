"""The `catchup` command: parse input, call the layers below, present output.

Every command that prints data takes `--json`. Errors a user can act on are
one line on stderr and an exit code (see `ExitCode`), never a traceback.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from catchup import __version__
from catchup.cancel import CancelToken
from catchup.codec.keys import generate_key_file
from catchup.config import Config, Shard, load_config, parse_config
from catchup.cycle import CycleOptions, LogReporter, Reporter
from catchup.daemon.process import serve as serve_daemon
from catchup.demo.run import (
    SERVE_SCHEDULE,
    DemoOptions,
    DemoResult,
    run_demo,
    serve_settings,
    stop_fleet,
    writing,
)
from catchup.engines import Finding
from catchup.engines.registry import engine_for
from catchup.errors import CatchupError, ExitCode, UsageError
from catchup.fleet.prune import prune
from catchup.fleet.run import ShardResult, backup_fleet, exit_code
from catchup.log import setup_logging
from catchup.repository import DamagedBackup, Manifest, Repository, open_repository
from catchup.repository.retention import future_dated
from catchup.verification import check_stored_objects, verify_backup

app = typer.Typer(
    name="catchup",
    help="Consistent backups of database shards that cost the source only the log delta.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output is read by people too (CI logs, mail): no 80-column squeeze there.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

CONFIG_HELP = "Config file (default: $CATCHUP_CONFIG, else ./catchup.toml)."


def global_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """A command's -c, or the one given before the command (`catchup -c FILE backup`).

    $CATCHUP_CONFIG is read by load_config, after both, so an explicit -c wins over it.
    """
    before = ctx.find_root().params.get("config_path")
    if value is not None and before is not None and value != before:
        raise typer.BadParameter(
            f"given twice, as {before} before the command and {value} after it; give it once"
        )
    return value if value is not None else before


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help=CONFIG_HELP, callback=global_config),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn a CatchupError into its one-line message and exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CatchupError as exc:
            for line in str(exc).splitlines():
                # escaped: a message may quote a stored manifest, which anyone could write
                err.print(f"[red]error:[/red] {escape(line)}", markup=True, highlight=False)
            raise typer.Exit(int(exc.exit_code)) from None

    return wrapper  # type: ignore[return-value]


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


# --- presentation helpers --------------------------------------------------------


def quoted(value: object) -> str:
    """A value for rich output, markup-escaped: store keys, manifest fields and server
    answers may hold anything, and anyone who can write to the bucket writes them."""
    return escape(str(value))


def new_table(title: str, columns: list[str], right: tuple[str, ...] = ()) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left")
    return table


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class ProgressReporter:
    """A live row per shard: its current step, and a bar when the step has a size."""

    def __init__(self, display: Progress) -> None:
        self.display = display
        self.tasks: dict[str, TaskID] = {}

    def _task(self, shard: str) -> TaskID:
        if shard not in self.tasks:
            self.tasks[shard] = self.display.add_task(shard, total=None, step="waiting")
        return self.tasks[shard]

    def step(self, shard: str, step: str) -> None:
        task_id = self._task(shard)
        # update(total=None) keeps the old total; a step of unknown size shows no percentage.
        for task in self.display.tasks:
            if task.id == task_id:
                task.total = None
        self.display.update(task_id, step=step, completed=0)

    def progress(self, shard: str, done: int, total: int) -> None:
        self.display.update(self._task(shard), total=total, completed=done)

    def warn(self, shard: str, message: str) -> None:
        self.display.console.print(f"[yellow]warning:[/yellow] {shard}: {escape(message)}")


@contextmanager
def reporting(json_output: bool) -> Iterator[Reporter]:
    """A live progress display on a terminal, log lines elsewhere."""
    if not err.is_terminal:
        yield LogReporter()
        return
    columns = (
        TextColumn("[bold]{task.description:<16}"),
        TextColumn("{task.fields[step]:<10}"),
        BarColumn(),
        TaskProgressColumn(),  # blank for steps without a known size
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=json_output) as display:
        yield ProgressReporter(display)


@contextmanager
def cancellable() -> Iterator[CancelToken]:
    """SIGINT/SIGTERM cancel the run; cycles unwind through their cleanup."""
    token = CancelToken()

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if token.cancelled:
            err.print(f"{name} again: still cleaning up ephemeral instances, please wait")
        token.cancel(f"received {name}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield token
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def open_repo(config: Config) -> Repository:
    return open_repository(config)


# --- backup ----------------------------------------------------------------------


@app.command()
@user_errors
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
            config, selected, open_repo(config), options, reporter, cancel, parallel
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
            human_bytes(r.stored_bytes) if r.ok else "",
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


# --- list / show -------------------------------------------------------------------


@app.command("list")
@user_errors
def list_backups(
    shard: Annotated[str | None, typer.Argument(help="Only this keyspace/shard.")] = None,
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """List complete backups, oldest first; damaged and future-dated ones are marked."""
    config = load_config(config_path)
    repository = open_repo(config)
    if shard:
        selected = config.shard(shard)
        catalog = repository.catalog(selected.keyspace, selected.shard)
    else:
        catalog = repository.catalog()
    now = datetime.now(UTC)
    rows: list[tuple[str, str, Manifest | DamagedBackup, str]] = [
        (m.shard_name, m.backup_id, m, "future-dated" if future_dated(m, now) else "ok")
        for m in catalog.backups
    ]
    rows += [(d.shard_name, d.backup_id, d, "damaged") for d in catalog.damaged]
    rows.sort(key=lambda row: row[:2])
    if json_output:
        print_json([{**entry.summary(), "state": state} for _, _, entry, state in rows])
        return
    table = new_table(
        f"Backups in {quoted(repository.url)}",
        ["shard", "id", "kind", "parent", "position", "from source", "data", "stored", "created"],
    )
    for name, backup_id, m, state in rows:
        if isinstance(m, DamagedBackup):
            table.add_row(quoted(name), quoted(backup_id), "[red]DAMAGED", *["-"] * 6)
            continue
        table.add_row(
            quoted(name),
            quoted(backup_id),
            quoted(m.kind) if state == "ok" else f"{quoted(m.kind)} [yellow](future-dated)",
            quoted(m.parent or "-"),
            quoted(m.position),
            human_bytes(m.bytes_from_source),
            human_bytes(m.data_bytes),
            human_bytes(m.stored_bytes),
            m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    out.print(table)
    for damaged in catalog.damaged:
        out.print(
            f"[red]damaged[/red] {quoted(damaged.shard_name)} {quoted(damaged.backup_id)}: "
            f"{quoted(damaged.reason)}"
        )


@app.command()
@user_errors
def show(
    backup_id: Annotated[str, typer.Argument(help="A backup id from `catchup list`.")],
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one backup's manifest."""
    manifest = open_repo(load_config(config_path)).find_any(backup_id)
    if json_output:
        print_json(manifest.model_dump(mode="json"))
        return
    summary = manifest.summary()

    def field(label: str, value: object) -> None:
        out.print(f"{label:>18}: {quoted(value)}")

    for key in ("id", "shard", "engine", "kind", "parent", "position", "created_at"):
        field(key, summary[key])
    field("server", manifest.server_version)
    field("source", f"{manifest.source.endpoint} ({manifest.source.role})")
    field("from source", human_bytes(manifest.bytes_from_source))
    field(
        "data / stored",
        f"{human_bytes(manifest.data_bytes)} / {human_bytes(manifest.stored_bytes)} in "
        f"{len(manifest.files)} files",
    )
    field("compression", manifest.compression)
    encryption = manifest.encryption or {"none": "not encrypted"}
    field("encryption", ", ".join(f"{k} {v}" for k, v in encryption.items()))
    field("steps", ", ".join(f"{k} {v:.2f}s" for k, v in manifest.durations.items()))
    if manifest.rebootstrap_reason:
        field("re-bootstrapped", manifest.rebootstrap_reason)


# --- restore / verify ----------------------------------------------------------------


def find_backup(
    config: Config, shard: str, backup_id: str | None
) -> tuple[Shard, Repository, Manifest]:
    """The shard, its repository (which keeps the backup's data key) and the backup."""
    selected = config.shard(shard)
    repository = open_repo(config)
    return selected, repository, repository.find(selected.keyspace, selected.shard, backup_id)


@app.command()
@user_errors
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


@app.command()
@user_errors
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


def print_findings(title: str, findings: list[Finding]) -> None:
    table = new_table(title, ["check", "ok", "detail"])  # a title is markup: callers quote
    for f in findings:
        table.add_row(
            quoted(f.check), "[green]yes[/green]" if f.ok else "[red]NO[/red]", quoted(f.detail)
        )
    out.print(table)


# --- keys -------------------------------------------------------------------------------


@app.command()
@user_errors
def keygen(
    out_file: Annotated[Path, typer.Argument(help="Where to write the new key file (mode 0600).")],
    json_output: JsonOption = False,
) -> None:
    """Create a key-encryption key file for `encryption.key_files`."""
    key = generate_key_file(out_file)
    if json_output:
        print_json({"key_id": key.key_id, "path": str(out_file)})
        return
    out.print(
        f"Wrote key {key.key_id} to {out_file} (mode 0600). Keep a copy somewhere safe: "
        "backups encrypted with it cannot be restored without it.\n"
        "Use it by listing it first in encryption.key_files; keep older key files listed "
        "after it for as long as backups made with them exist."
    )


# --- prune / check -----------------------------------------------------------------


@app.command("prune")
@user_errors
def prune_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Apply retention and remove incomplete leftovers."""
    config = load_config(config_path)
    result = prune(
        open_repo(config),
        config.work_dir,
        config.retention.min_count,
        timedelta(days=config.retention.min_age_days),
        dry_run,
        incomplete_grace=timedelta(hours=config.retention.incomplete_grace_hours),
        lease_seconds=config.lock.lease_seconds,
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


@app.command()
@user_errors
def check(
    shards: Annotated[list[str] | None, typer.Argument(help="keyspace/shard names.")] = None,
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check config, connectivity, privileges and binlog coverage for each shard."""
    config = load_config(config_path)
    repository = open_repo(config)
    report: dict[str, list[Finding]] = {"repository": check_repository(repository)}
    config.require_passwords(config.select(shards))
    for shard in config.select(shards):
        report[shard.name] = check_shard(config, shard, repository)
    healthy = all(f.ok for findings in report.values() for f in findings)
    if json_output:
        print_json({name: [f.__dict__ for f in fs] for name, fs in report.items()})
    else:
        for name, findings in report.items():
            print_findings(quoted(name), findings)
    raise typer.Exit(ExitCode.OK if healthy else ExitCode.FAILED)


def check_repository(repository: Repository) -> list[Finding]:
    """The store answers, every backup's manifest opens with the configured keys, and
    none is dated in the future."""
    try:
        catalog = repository.catalog()
    except CatchupError as exc:
        return [Finding("repository", False, str(exc))]
    active = repository.keyring.active
    encryption = f"new backups encrypted with {active.key_id}" if active else "not encrypted"
    try:
        repository.check_encryption()
    except CatchupError as exc:
        return [Finding("repository", False, f"{repository.url}: {exc}")]
    findings = [
        Finding(
            "repository",
            True,
            f"{repository.url}: {len(catalog.backups)} complete backups; {encryption}",
        )
    ]
    for damaged in catalog.damaged:
        findings.append(
            Finding(
                "damaged backup",
                False,
                f"{damaged.shard_name} {damaged.backup_id}: {damaged.reason}",
            )
        )
    now = datetime.now(UTC)
    for manifest in catalog.backups:
        if future_dated(manifest, now):
            findings.append(
                Finding(
                    "future-dated backup",
                    False,
                    f"{manifest.shard_name} {manifest.backup_id} is dated "
                    f"{manifest.created_at:%Y-%m-%d %H:%M:%S} UTC, ahead of this host's clock; "
                    "it is not used as latest",
                )
            )
    return findings


def check_shard(config: Config, shard: Shard, repository: Repository) -> list[Finding]:
    try:
        with engine_for(shard.engine).open_source(config, shard) as source:
            findings = source.check()
            latest = repository.latest(shard.keyspace, shard.shard)
            if latest is None:
                findings.append(Finding("newest backup", True, "none yet: next cycle bootstraps"))
                return findings
            try:
                verdict = source.judge(latest.position)
                findings.append(
                    Finding(
                        "newest backup",
                        verdict.coverage.value == "covered",
                        f"{latest.backup_id} at {latest.position}: {verdict.reason}",
                    )
                )
            except CatchupError as exc:
                findings.append(Finding("newest backup", False, str(exc)))
            return findings
    except CatchupError as exc:
        return [Finding("connect", False, str(exc))]


# --- serve ------------------------------------------------------------------------


@app.command()
@user_errors
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
    config = load_config(config_path)
    config = with_daemon_overrides(config, listen, on_terminate)
    if config.executor.kind == "local":  # else the Jobs' pods log in, and read the password
        config.require_passwords(config.shards)
    serve_daemon(config, open_repo(config), config.daemon.on_terminate, announce_url)


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


# --- demo ---------------------------------------------------------------------------


@app.command()
@user_errors
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
        str, typer.Option("--engine", help="mariadb, postgres, or mixed (alternating).")
    ] = "mariadb",
    json_output: JsonOption = False,
) -> None:
    """Back up a local sandbox fleet twice, restore a shard and prove it equal to its source."""
    if engine not in ("mariadb", "postgres", "mixed"):
        raise UsageError(f"--engine {engine!r} is not one of mariadb, postgres, mixed; pick one")
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
    token_file = serve_settings(result)
    config = load_config(result.config_path)

    def announce(url: str) -> None:
        out.print(f"catchup daemon listening on {url}", soft_wrap=True)
        out.print(f"status page: {url} (API token in {token_file}); Ctrl-C stops everything")

    say(f"Serving the fleet: a cycle of every shard at '{SERVE_SCHEDULE}', writes every minute")
    try:
        with writing(result.sources):
            serve_daemon(config, open_repo(config), config.daemon.on_terminate, announce)
    finally:
        stop_fleet(result.sources)


def demo_rows(result: DemoResult) -> list[dict[str, object]]:
    full_dump = {r.shard: r.bytes_from_source for c, r in result.cycles if r.kind == "bootstrap"}
    rows: list[dict[str, object]] = []
    for cycle, r in result.cycles:
        base = full_dump.get(r.shard) or 0
        rows.append(
            {
                "shard": r.shard,
                "cycle": cycle,
                "kind": r.kind,
                "ok": r.ok,
                "position": r.position,
                "bytes_from_source": r.bytes_from_source,
                "data_bytes": r.data_bytes,
                "stored_bytes": r.stored_bytes,
                "percent_of_full_dump": round(100 * r.bytes_from_source / base, 2)
                if base
                else None,
                "seconds": r.seconds,
                "durations": r.durations,
                "error": r.error,
            }
        )
    rows.append(
        {
            "verified": result.verified,
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
    rows = demo_rows(result)
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
    for row in rows[:-1]:
        steps = " ".join(f"{k}={v:.1f}" for k, v in (row["durations"] or {}).items())
        table.add_row(
            str(row["shard"]),
            str(row["cycle"]),
            str(row["kind"] or "[red]failed"),
            str(row["position"] or ""),
            human_bytes(row["data_bytes"]),
            human_bytes(row["bytes_from_source"]),
            f"{row['percent_of_full_dump']:.1f}" if row["percent_of_full_dump"] is not None else "",
            f"{row['seconds']:.1f}",
            steps or str(row["error"] or ""),
        )
    out.print(table)
    for check in rows[-1]["checks"]:
        if check["verified"]:
            out.print(
                f"[green]verified[/green]: {check['shard']} backup {check['backup_id']} restored;"
                f" position and the contents of all {check['tables_compared']} tables equal the "
                "source"
            )
        else:
            out.print(
                f"[red]NOT verified[/red]: {check['shard']}: position equal "
                f"{check['position_equal']}, checksums equal {check['checksums_equal']}"
            )


def main() -> None:
    app()
