"""The engines the cycle contract suite (test_engine_contract.py) runs on, each as a
real sandbox source from catchup.demo, and what differs between them: how a
source loses the log a backup chain needs, and how a killed replica fails. A new
engine gets the whole suite by one entry in ENGINES."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from catchup.demo.mariadb import MariaDBSandbox
from catchup.demo.mysql import MySQLSandbox
from catchup.demo.postgres import PostgresSandbox
from catchup.demo.sandbox import Sandbox
from catchup.fleet.run import ShardResult


@dataclass(frozen=True)
class EngineCase:
    name: str
    new_source: Callable[[Path, int], Sandbox]  # a sandbox in a directory, with a server id
    lose_log: Callable[[Sandbox, ShardResult], None]  # after `backup`: catch-up is impossible
    replica_died: str  # a regex of the error a cycle fails with when its replica is killed


def purge_binlogs(source: Sandbox, backup: ShardResult) -> None:
    assert isinstance(source, MariaDBSandbox)
    source.purge_binlogs()


def drop_slot(source: Sandbox, backup: ShardResult) -> None:
    assert isinstance(source, PostgresSandbox)
    slot = backup.position.partition(":")[2]
    source.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


ENGINES = {
    "mariadb": EngineCase(
        "mariadb",
        lambda root, server_id: MariaDBSandbox(root, server_id),
        purge_binlogs,
        "ephemeral mariadbd died",
    ),
    "mysql": EngineCase(
        "mysql",
        lambda root, server_id: MySQLSandbox(root, server_id),
        purge_binlogs,  # MySQL's PURGE BINARY LOGS, as MariaDB's
        "ephemeral mysqld died",
    ),
    "postgres": EngineCase(
        "postgres",
        lambda root, server_id: PostgresSandbox(root),
        drop_slot,
        "ephemeral postgres died|stopped in state",
    ),
}


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> EngineCase:
    """Each engine of ENGINES in turn."""
    return ENGINES[request.param]
