"""The first backup of a shard, consistent and without a long global lock, by one
of two methods (measured against each other in docs/benchmarks.md):

- **clone**: `CLONE INSTANCE FROM` the source, MySQL's own physical copy of every
  InnoDB table at one consistent GTID set. Needs the clone plugin on the source,
  BACKUP_ADMIN for the catchup account and the same MySQL version on both sides.
  The clone replaces the fresh instance's data dir and then asks a supervising
  process to restart the server; there is none (error 3707), so catchup starts it.
- **dump**: `mysqldump --single-transaction --set-gtid-purged=ON`, a logical copy
  with its GTID set, loaded into a fresh instance; accounts are copied first
  (`SHOW CREATE USER` and `SHOW GRANTS`), so a later GRANT on the source replicates.

`mysql.bootstrap = "auto"` clones where the source allows it and dumps otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import pymysql

from catchup.cancel import CancelToken
from catchup.engines import StepProgress
from catchup.engines.mariadb.bootstrap import load_dump
from catchup.engines.mysql.binaries import program_version
from catchup.engines.mysql.catchup import forget_sources
from catchup.engines.mysql.server import ADMIN_USER, MySQLServer
from catchup.engines.mysql.source import MySQLSource
from catchup.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

DUMP_OPTIONS = [
    "--single-transaction",
    "--set-gtid-purged=ON",
    "--routines",
    "--events",
    "--triggers",
    "--hex-blob",
    "--no-tablespaces",
    "--max-allowed-packet=1G",
    "--protocol=TCP",
]
# Accounts every MySQL server creates for itself; never copied.
SYSTEM_ACCOUNTS = ("mysql.sys", "mysql.session", "mysql.infoschema")
CLONE_RESTART_ERRORS = {3707}  # "Restart server failed (mysqld is not managed by supervisor)"
LOST_CONNECTION = {2006, 2013}


def bootstrap(
    server: MySQLServer,
    source: MySQLSource,
    method: str,
    cancel: CancelToken,
    progress: StepProgress,
) -> str:
    """Install a fresh data dir, start it, fill it from the source; returns the method used."""
    server.install()
    server.start(cancel=cancel)
    estimate = max(1, source.estimated_data_bytes())

    def report() -> None:
        progress(min(source.bytes_sent, estimate), estimate)

    refusal = source.clone_refusal(program_version(server.program("mysqld")))
    if method == "clone" and refusal:
        raise ConfigError(f"mysql.bootstrap = 'clone' is impossible: {refusal}; use 'auto'")
    if method == "auto" and refusal:
        log.info("bootstrapping by mysqldump, not CLONE: %s", refusal)
    if method == "dump" or refusal:
        dump(server, source, cancel, report)
        return "dump"
    clone(server, source, cancel, report)
    return "clone"


def clone(
    server: MySQLServer, source: MySQLSource, cancel: CancelToken, report: Callable[[], None]
) -> None:
    """CLONE INSTANCE FROM the source through the cycle's relay, then start the copy."""
    donor = f"127.0.0.1:{source.relay.port}"
    tls = "REQUIRE SSL" if source.session.facts().tls else "REQUIRE NO SSL"
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SET GLOBAL clone_valid_donor_list = %s", (donor,))
    failure: list[str] = []

    def run_clone() -> None:
        try:
            with server.connect() as conn, conn.cursor() as cursor:
                cursor.execute(
                    f"CLONE INSTANCE FROM %s@'127.0.0.1':%s IDENTIFIED BY %s {tls}",
                    (source.session.user, source.relay.port, source.password or ""),
                )
        except pymysql.err.MySQLError as exc:
            if (exc.args[0] if exc.args else None) not in CLONE_RESTART_ERRORS | LOST_CONNECTION:
                failure.append(str(exc.args[-1]))

    # In a thread, so that progress is reported and a cancel is seen while it copies.
    worker = threading.Thread(target=run_clone, name="clone", daemon=True)
    worker.start()
    while worker.is_alive():
        cancel.check()
        report()
        worker.join(0.2)
    if failure:
        raise SourceError(f"CLONE INSTANCE from the source failed: {failure[0]}")
    # The recipient shuts itself down after a clone; wait for it, then start the copy.
    with contextlib.suppress(Exception):
        assert server.process is not None
        server.process.wait(120)
    if server.running:
        server.stop()
    server.start(cancel=cancel)
    require_completed_clone(server)
    forget_sources(server)


def dump(
    server: MySQLServer, source: MySQLSource, cancel: CancelToken, report: Callable[[], None]
) -> None:
    """Load a consistent dump that sets the GTID set, then copy the accounts.

    The accounts are read after the dump's snapshot, never before: a change made to
    them in between is then both copied and replicated again by the catch-up, where a
    repeated GRANT or ALTER USER is harmless and a repeated CREATE or DROP USER fails
    the cycle loudly. Read before the snapshot, such a change would be lost silently
    (the dump's GTID set says it was applied). Grants come after the tables they name;
    objects whose definer does not exist yet load with a warning (the admin account
    holds ALLOW_NONEXISTENT_DEFINER)."""
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute(reset_gtids_statement(program_version(server.program("mysqld"))))
    databases = source.session.user_databases()
    if not databases:  # nothing to dump: the GTID set alone, read before the accounts
        with server.connect() as conn, conn.cursor() as cursor:
            cursor.execute("SET GLOBAL gtid_purged = %s", (str(source.session.executed()),))
        copy_accounts(server, source)
        return
    load_dump(
        server,
        source.relay.port,
        source.session.user,
        source.password,
        databases,
        cancel,
        report,
        programs=("mysqldump", "mysql"),
        options=DUMP_OPTIONS,
    )
    copy_accounts(server, source)


def reset_gtids_statement(version: str) -> str:
    """Empty the GTID set before a dump sets it: RESET MASTER before 8.4, then renamed."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return "RESET BINARY LOGS AND GTIDS" if (major, minor) >= (8, 4) else "RESET MASTER"


def copy_accounts(server: MySQLServer, source: MySQLSource) -> None:
    """Leave the fresh instance with the source's accounts and catchup's admin only."""
    session = source.session
    session.query("SET SESSION print_identified_with_as_hex = ON")
    accounts = [
        (user, host)
        for user, host in session.query("SELECT user, host FROM mysql.user")
        if user not in SYSTEM_ACCOUNTS and user != ADMIN_USER
    ]
    creates = [
        (f"{u}@{h}", session.query("SHOW CREATE USER %s@%s", (u, h))[0][0]) for u, h in accounts
    ]
    grants = [
        (f"{u}@{h}", row[0])
        for u, h in accounts
        for row in session.query("SHOW GRANTS FOR %s@%s", (u, h))
    ]
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SET SESSION sql_log_bin = 0")
        cursor.execute("SELECT user, host FROM mysql.user")
        for user, host in cursor.fetchall():
            if user not in SYSTEM_ACCOUNTS and user != ADMIN_USER:
                cursor.execute("DROP USER %s@%s", (user, host))
        # Roles first where an account names one as its default: retry what failed once.
        pending = creates
        for _ in range(2):
            failed = []
            for account, statement in pending:
                try:
                    cursor.execute(statement)
                except pymysql.err.MySQLError:
                    failed.append((account, statement))
            pending = failed
        for account, statement in [*pending, *grants]:
            try:
                cursor.execute(statement)
            except pymysql.err.MySQLError as exc:
                # The account, not the statement: it may hold a password hash.
                raise SourceError(
                    f"copying the source's account {account} failed: {exc.args[-1]}"
                ) from None


def require_completed_clone(server: MySQLServer) -> None:
    """A lost connection also ends a failed clone, after which MySQL rolls the recipient
    back to its empty data dir: only the clone's own status says it completed."""
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT state, error_no, error_message FROM performance_schema.clone_status")
        row = cursor.fetchone()
    if row is None or row[0] != "Completed" or row[1]:
        state, error, message = row or ("no status", 0, "")
        raise SourceError(
            f"CLONE INSTANCE from the source did not complete ({state}): {error} {message}"
        )
