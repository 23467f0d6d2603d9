"""The sandbox sources a run measures, and catchup's cycles over them. Every
import of catchup's sandboxes is here."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catchup.cancel import CancelToken
from catchup.config import Config, parse_config
from catchup.cycle import CycleOptions, LogReporter
from catchup.demo.mariadb import MariaDBSandbox
from catchup.demo.mysql import MySQLSandbox
from catchup.demo.postgres import PostgresSandbox
from catchup.demo.run import demo_config
from catchup.fleet.run import ShardResult, backup_fleet
from catchup.repository import open_repository
from impact.measure import Cost, metered

BENCH_USER, BENCH_PASSWORD = "bench", "bench-only-not-a-secret"


class Bench:
    """Sandbox sources, a catchup config over them, and one repository."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sources: list[MariaDBSandbox | PostgresSandbox] = []  # running (MySQL's too)
        self.names: dict[int, str] = {}  # id(source) -> shard name, unique over the run
        self.made = 0

    def _named(self, make: Callable[[Path, int], Any]) -> Any:
        # A counter, not len(names): a stopped source's id may be reused by a new one,
        # which then overwrote its entry and got the directory of a running source.
        index = self.made
        self.made += 1
        source = make(self.root / f"src-{index}", index + 1)
        self.names[id(source)] = f"s{index}"
        self.sources.append(source)
        return source

    def add_mariadb(self, size_mb: float) -> MariaDBSandbox:
        source = self._named(lambda root, server_id: MariaDBSandbox(root, server_id))
        source.start()
        # Production fleets (and Vitess) log rows; the sandbox default is MIXED.
        source.execute("SET GLOBAL binlog_format = 'ROW'")
        source.execute(f"CREATE USER '{BENCH_USER}'@'%' IDENTIFIED BY '{BENCH_PASSWORD}'")
        source.execute(f"GRANT ALL ON *.* TO '{BENCH_USER}'@'%'")
        source.load_demo_data(size_mb)
        return source

    def add_mysql(self, size_mb: float) -> MySQLSandbox:
        source = self._named(lambda root, server_id: MySQLSandbox(root, server_id))
        source.start()  # ROW binlogs: MySQL's default
        source.execute(f"CREATE USER '{BENCH_USER}'@'%' IDENTIFIED BY '{BENCH_PASSWORD}'")
        source.execute(f"GRANT ALL ON *.* TO '{BENCH_USER}'@'%'")
        source.load_demo_data(size_mb)
        return source

    def add_postgres(self, size_mb: float) -> PostgresSandbox:
        source = self._named(lambda root, server_id: PostgresSandbox(root))
        source.start()
        source.load_demo_data(size_mb)
        return source

    def config(
        self, sources: list, shard: str | None = None, mysql: dict[str, Any] | None = None
    ) -> Config:
        """`shard` names a single source's shard (one source, two shards: clone vs dump);
        `mysql` overrides the [mysql] settings (e.g. {"bootstrap": "clone"})."""
        path = self.root / f"catchup-{len(sources)}.toml"
        path.write_text(
            demo_config(self.root, sources, len(sources), repository=str(self.root / "repo"))
        )
        config = parse_config(tomllib.loads(path.read_text()), str(path))
        # demo_config names shards by position: give each source its own name.
        shards = [
            entry.model_copy(update={"shard": shard or self.names[id(source)]})
            for entry, source in zip(config.shards, sources, strict=True)
        ]
        update: dict[str, Any] = {"shards": shards}
        if mysql:
            update["mysql"] = config.mysql.model_copy(update=mysql)
        return config.model_copy(update=update)

    def backup(
        self, sources: list, shard: str | None = None, mysql: dict[str, Any] | None = None
    ) -> list[ShardResult]:
        config = self.config(sources, shard, mysql)
        results = backup_fleet(
            config,
            config.shards,
            open_repository(config),
            CycleOptions(),
            LogReporter(),
            CancelToken(),
            parallel=len(sources),
        )
        failed = [r.error for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"catchup failed: {failed}")
        return results

    def stop(self) -> None:
        for source in self.sources:
            try:
                source.stop()
            except Exception:
                source.kill()
        self.sources.clear()


def server_pid(source: MariaDBSandbox | PostgresSandbox) -> int:
    assert source.server.process is not None
    return source.server.process.pid


def catchup_cycle(
    bench: Bench,
    source: MariaDBSandbox | PostgresSandbox,
    name: str,
    shard: str | None = None,
    mysql: dict[str, Any] | None = None,
) -> Cost:
    with metered(server_pid(source)) as (meter, clock):
        [result] = bench.backup([source], shard, mysql)
    return Cost(
        name,
        result.bytes_from_source,
        meter.cpu_seconds,
        meter.read_bytes,
        clock["wall"],
        result.stored_bytes,
        {
            "catch_up_seconds": result.durations.get("catch up", 0.0),
            "cycle": result.seconds,
            **{f"step {step}": seconds for step, seconds in result.durations.items()},
        },
    )
