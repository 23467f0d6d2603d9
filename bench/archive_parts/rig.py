"""The archive bench's rig: one sandbox source (MariaDB or PostgreSQL) with its
demo data, a catchup config over it with the archive on, a steady writer whose
marker transactions carry their commit times, and archivers run in-process."""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catchup.cancel import CancelToken
from catchup.config import Config, parse_config
from catchup.cycle import CycleOptions, LogReporter
from catchup.daemon.archivers import ArchiverPool
from catchup.demo.mariadb import MariaDBSandbox
from catchup.demo.postgres import PostgresSandbox
from catchup.demo.run import demo_config
from catchup.engines.registry import engine_for
from catchup.fleet.run import ShardResult, backup_fleet
from catchup.repository import Repository, open_repository

Source = MariaDBSandbox | PostgresSandbox


class PositionedReplica(MariaDBSandbox):
    """A MariaDB replica that starts replicating at its primary's current position (not
    the first binlog), so it is idle but for what is written from now on."""

    def _replicate_from(self, primary: MariaDBSandbox) -> None:
        self.execute("SET GLOBAL gtid_slave_pos = %s", (primary.position(),))
        super()._replicate_from(primary)


def make_source(engine: str, root: Path, size_mb: float) -> Source:
    source: Source
    if engine == "mariadb":
        source = MariaDBSandbox(root / "source", server_id=1)
        source.start()
        source.execute("SET GLOBAL binlog_format = 'ROW'")  # what production fleets log
    else:
        source = PostgresSandbox(root / "source")
        source.start()
    source.load_demo_data(size_mb)
    return source


def make_replica(source: Source, root: Path) -> Source:
    """MariaDB: a replica from the current position; PostgreSQL: a streaming physical
    standby (pg_basebackup -R), each connected to the source like any replica."""
    replica: Source
    if isinstance(source, MariaDBSandbox):
        replica = PositionedReplica(root / "replica", server_id=2, replica_of=source)
    else:
        replica = PostgresSandbox(root / "replica", replica_of=source)
    replica.start()
    return replica


def server_pid(source: Source) -> int:
    assert source.server.process is not None
    return source.server.process.pid


class Rig:
    """A source, its config (archive on) and repository, and the shard's archivers."""

    def __init__(self, root: Path, source: Source) -> None:
        self.root, self.source = root, source
        self.engine = engine_for(source.engine)
        path = root / "catchup.toml"
        path.write_text(demo_config(root, [source], 1, repository=str(root / "repo"), archive=True))
        self.config = parse_config(tomllib.loads(path.read_text()), str(path))
        self.config_path = path
        self.shard = self.config.shards[0]
        self.repository: Repository = open_repository(self.config)

    def with_flush(self, seconds: float) -> Config:
        archive = self.config.archive.model_copy(update={"flush_seconds": seconds})
        return self.config.model_copy(update={"archive": archive})

    def backup(self) -> ShardResult:
        [result] = backup_fleet(
            self.config,
            self.config.shards,
            self.repository,
            CycleOptions(),
            LogReporter(),
            CancelToken(),
            parallel=1,
        )
        if not result.ok:
            raise RuntimeError(f"catchup failed: {result.error}")
        return result

    @contextmanager
    def archiving(self, flush_seconds: float = 5.0) -> Iterator[ArchiverPool]:
        """The shard's archiver (as `catchup serve` runs it), streaming before the block."""
        pool = ArchiverPool(self.with_flush(flush_seconds), self.repository)
        pool.start()
        try:
            status = pool.statuses[self.shard.name]
            deadline = time.monotonic() + 60
            while status.state != "streaming" or not status.position:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the archiver did not start: {status.summary()}")
                time.sleep(0.1)
            yield pool
        finally:
            pool.stop()

    def archived(self, pool: ArchiverPool) -> str:
        status = pool.statuses[self.shard.name]
        with status.lock:
            return status.position

    def holds(self, pool: ArchiverPool, position: str) -> bool:
        end = self.archived(pool)
        order = self.engine.compare_positions(end, position) if end else None
        return order is not None and order >= 0


# --- the steady writer --------------------------------------------------------------


@dataclass
class Marker:
    committed: float  # time.time() when its commit returned
    position: str
    archived: float | None = None

    @property
    def lag(self) -> float | None:
        return None if self.archived is None else self.archived - self.committed


@dataclass
class Writer:
    """`rate` small transactions a second, one in every `rate` a marker whose position is
    noted; with a rig and pool, a watcher notes when the archive first holds each."""

    source: Source
    rate: float = 50.0
    markers: list[Marker] = field(default_factory=list)
    commits: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def prepare(self) -> None:
        if isinstance(self.source, MariaDBSandbox):
            self.source.execute("CREATE DATABASE IF NOT EXISTS benchw")
            self.source.execute(
                "CREATE TABLE IF NOT EXISTS benchw.w (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                "at DOUBLE, payload VARCHAR(200)) ENGINE=InnoDB"
            )
        else:
            self.source.execute(
                "CREATE TABLE IF NOT EXISTS benchw (id bigserial PRIMARY KEY, "
                "at double precision, payload text)"
            )

    def _run(self) -> None:
        mariadb = isinstance(self.source, MariaDBSandbox)
        insert = (
            "INSERT INTO benchw.w (at, payload) VALUES (%s, REPEAT('x', 100))"
            if mariadb
            else "INSERT INTO benchw (at, payload) VALUES (%s, repeat('x', 100))"
        )
        where = "SELECT @@last_gtid" if mariadb else "SELECT pg_current_wal_insert_lsn()"
        conn: Any = self.source.connect() if mariadb else self.source.server.connect()
        cursor = conn.cursor()
        every = max(1, round(self.rate))
        started, n = time.monotonic(), 0
        try:
            while not self.stop.is_set():
                cursor.execute(insert, (time.time(),))
                if mariadb:
                    conn.commit()
                committed = time.time()
                if n % every == 0:
                    cursor.execute(where)
                    self.markers.append(Marker(committed, str(cursor.fetchone()[0])))
                n += 1
                self.commits = n
                pause = started + n / self.rate - time.monotonic()
                if pause > 0:
                    self.stop.wait(pause)
        finally:
            conn.close()


@contextmanager
def writing(
    source: Source, rate: float, rig: Rig | None = None, pool: ArchiverPool | None = None
) -> Iterator[Writer]:
    """The steady writer for the block; markers written while it ran get their archive
    time (waiting up to 60 s after the block for the last ones)."""
    writer = Writer(source, rate)
    threads = [threading.Thread(target=writer._run, daemon=True)]
    done = threading.Event()

    def watch() -> None:
        assert rig is not None and pool is not None
        seen = 0
        while True:
            while seen < len(writer.markers):
                marker = writer.markers[seen]
                position = rig.engine.parse_position(marker.position)
                if not rig.holds(pool, position):
                    break
                marker.archived = time.time()
                seen += 1
            if done.is_set() and (seen == len(writer.markers) or time.monotonic() > give_up):
                return
            time.sleep(0.02)

    give_up = float("inf")
    if rig is not None and pool is not None:
        threads.append(threading.Thread(target=watch, daemon=True))
    for thread in threads:
        thread.start()
    try:
        yield writer
    finally:
        writer.stop.set()
        threads[0].join()
        give_up = time.monotonic() + 60
        done.set()
        for thread in threads[1:]:
            thread.join()
