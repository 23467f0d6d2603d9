"""A restored MySQL data dir: it already stands at its backup's GTID set (kept in the
mysql.gtid_executed table, which a server without binary logs updates at every
commit), and it has no `auto.cnf`, so the server that starts it takes a fresh
server_uuid. Nothing is added."""

from __future__ import annotations

from pathlib import Path

from catchup.cancel import CancelToken
from catchup.engines.mysql.server import MySQLServer


def open_for_checks(server: MySQLServer, cancel: CancelToken) -> None:
    """Start the restored data dir as it is: it stands exactly at its GTID set."""
    server.start(cancel=cancel)


def prepare_restored(data_dir: Path, position: str) -> str:
    """How to start a restored data dir on a stock server, for the operator."""
    return start_instructions(str(data_dir), position)


def start_instructions(data_dir: str, position: str) -> str:
    return (
        f"Start it with: mysqld --datadir={data_dir} --gtid-mode=ON "
        "--enforce-gtid-consistency=ON (chown -R mysql: it first when the server runs as "
        "mysql); it was shut down cleanly, so no crash recovery runs. To attach it as a "
        "replica: CHANGE REPLICATION SOURCE TO SOURCE_HOST=…, SOURCE_AUTO_POSITION=1; "
        f"START REPLICA (gtid_executed is {position or 'empty'})."
    )
