"""What every command prints with: the consoles, tables, JSON, progress and errors.

Anything that reaches rich as markup goes through `quoted` first: store keys, manifest
fields and server answers may hold anything, and anyone who can write to the bucket
writes them.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

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

from catchup.cycle import LogReporter, Reporter
from catchup.engines import Finding
from catchup.errors import CatchupError

# Piped output is read by people too (CI logs, mail): no 80-column squeeze there.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

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


def quoted(value: object) -> str:
    """A value for rich output, markup-escaped (see the module docstring)."""
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


def print_findings(title: str, findings: list[Finding]) -> None:
    table = new_table(title, ["check", "ok", "detail"])  # a title is markup: callers quote
    for f in findings:
        table.add_row(
            quoted(f.check), "[green]yes[/green]" if f.ok else "[red]NO[/red]", quoted(f.detail)
        )
    out.print(table)


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
