"""A restored MariaDB data dir: it already stands at its backup's position
(`gtid_slave_pos` is in its mysql.gtid_slave_pos table), so nothing is added."""

from __future__ import annotations

from pathlib import Path

from catchup.cancel import CancelToken
from catchup.engines.mariadb.server import MariaDBServer


def open_for_checks(server: MariaDBServer, cancel: CancelToken) -> None:
    """Start the restored data dir as it is: it stands exactly at its position."""
    server.start(cancel=cancel)


def prepare_restored(data_dir: Path, position: str) -> str:
    """How to start a restored data dir on a stock server, for the operator."""
    return (
        f"Start it with: mariadbd --datadir={data_dir} (chown -R mysql: it first when the "
        "server runs as mysql). To attach it as a replica: CHANGE MASTER TO …, "
        f"MASTER_USE_GTID=slave_pos (gtid_slave_pos is {position})."
    )
