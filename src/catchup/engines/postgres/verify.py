"""Checking a restored PostgreSQL backup: where recovery stopped, and pg_amcheck."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from catchup.engines import Finding
from catchup.engines.postgres.lsn import format_lsn, parse_lsn, split_position, stopped_at
from catchup.engines.postgres.replay import reached_position
from catchup.engines.postgres.restore import superuser
from catchup.engines.postgres.server import (
    PostgresServer,
    read_text,
    run_as,
    run_tool,
    select_value,
)


def verify(server: PostgresServer, user: str, expected_position: str) -> list[Finding]:
    """Findings for a backup opened for checks; `user` is the role the instance lets in."""
    expected, _ = split_position(expected_position)
    log = read_text(server.files.log)
    stopped = re.search(r'recovery stopping after WAL location \(LSN\) "([0-9A-F/]+)"', log)
    if stopped is not None:  # opened at the backup's own position (open_for_checks)
        ok = stopped_at(parse_lsn(stopped.group(1)), expected)
        seen = f"recovery stopped at {stopped.group(1)}"
    else:  # replayed from the log archive (replay_log): where its new timeline branched
        reached = reached_position(server.files.data_dir)
        ok = reached is not None and split_position(reached)[0] == expected
        seen = f"replay reached {reached.partition('@')[0] if reached else '(no stop found)'}"
    findings = [Finding("position", ok, f"{seen}; expected {format_lsn(expected)}")]
    amcheck = server.binaries / "pg_amcheck"
    if amcheck.exists():
        result = run_tool(
            [
                *run_as(),
                str(amcheck),
                "--all",
                "--install-missing",
                "-h",
                str(server.files.sockets),
                "-p",
                str(server.port),
                "-U",
                superuser(server, user),
            ]
        )
        detail = (result.stdout + result.stderr).strip().splitlines()
        findings.append(
            Finding(
                "pg_amcheck --all",
                result.returncode == 0,
                "no corruption found" if result.returncode == 0 else " | ".join(detail[-3:]),
            )
        )
    return findings


def table_checksums(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, int | None]:
    """Ordered contents of every user table, hashed (md5 of the rows in order)."""
    tables = conn.execute(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    ).fetchall()
    checksums: dict[str, int | None] = {}
    for (table,) in tables:
        digest = str(
            select_value(
                conn,
                "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
                f"FROM {table} t",
            )
        )
        checksums[table] = int(digest[:15], 16)
    return checksums
