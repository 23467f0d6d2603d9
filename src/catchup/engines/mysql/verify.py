"""Checking a restored MySQL backup: its GTID set and every table (CHECK TABLE and
CHECKSUM TABLE are the protocol family's, in mariadb/verify.py)."""

from __future__ import annotations

from catchup.engines import Finding
from catchup.engines.mariadb.verify import check_tables, table_checksums
from catchup.engines.mysql.catchup import executed
from catchup.engines.mysql.gtid import GtidSet
from catchup.engines.mysql.server import MySQLServer

__all__ = ["table_checksums", "verify"]


def verify(server: MySQLServer, expected_position: str) -> list[Finding]:
    """The GTID set the data stands at (@@gtid_executed), and CHECK TABLE of every table."""
    with server.connect() as conn:
        reached = executed(conn)
    findings = [
        Finding(
            "position",
            reached == GtidSet.parse(expected_position),
            f"@@gtid_executed {reached or '(empty)'}; manifest {expected_position or '(empty)'}",
        )
    ]
    return [*findings, *check_tables(server)]
