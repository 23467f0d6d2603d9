"""Checking a restored MariaDB backup: its position and every table."""

from __future__ import annotations

import pymysql.cursors

from catchup.engines import Finding
from catchup.engines.mariadb.catchup import slave_position
from catchup.engines.mariadb.gtid import Position
from catchup.engines.mariadb.server import MariaDBServer, select_row


def verify(server: MariaDBServer, expected_position: str) -> list[Finding]:
    """The position the data stands at (gtid_slave_pos), and CHECK TABLE of every table."""
    with server.connect() as conn:
        reached = str(slave_position(conn))
    findings = [
        Finding(
            "position",
            Position.parse(reached) == Position.parse(expected_position),
            f"@@gtid_slave_pos {reached or '(empty)'}; manifest {expected_position or '(empty)'}",
        )
    ]
    return [*findings, *check_tables(server)]


def check_tables(server: MariaDBServer) -> list[Finding]:
    """CHECK TABLE of every table (MariaDB and MySQL alike)."""
    findings = []
    with server.connect() as conn, conn.cursor() as cursor:
        for table in _all_tables(cursor):
            cursor.execute(f"CHECK TABLE {table}")
            results = cursor.fetchall()
            ok = not any(r[2] == "error" or r[3] == "Corrupt" for r in results)
            findings.append(Finding(f"CHECK TABLE {table}", ok, "; ".join(r[3] for r in results)))
    return findings


def _all_tables(cursor: pymysql.cursors.Cursor) -> list[str]:
    cursor.execute(
        "SELECT CONCAT('`', table_schema, '`.`', table_name, '`') FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
        "('information_schema', 'performance_schema') ORDER BY 1"
    )
    return [row[0] for row in cursor.fetchall()]


def table_checksums(
    cursor: pymysql.cursors.Cursor, include_system: bool = False
) -> dict[str, int | None]:
    """CHECKSUM TABLE of every user table (and the system ones if asked)."""
    checksums: dict[str, int | None] = {}
    for table in _all_tables(cursor):
        if not include_system and table.startswith(("`mysql`.", "`sys`.")):
            continue
        checksums[table] = select_row(cursor, f"CHECKSUM TABLE {table}")[1]
    return checksums
