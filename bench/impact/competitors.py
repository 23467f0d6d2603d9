"""The tools operators run today, measured like catchup: mariadb-dump, mydumper and
mariadb-backup for MariaDB, mysqldump and CLONE INSTANCE for MySQL, pg_basebackup for
PostgreSQL. The network tools pull through a counting relay; mariadb-backup runs on
the source host."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from benchlib import dir_bytes
from catchup.demo.mariadb import MariaDBSandbox
from catchup.demo.mysql import MySQLSandbox
from catchup.demo.postgres import PostgresSandbox
from catchup.engines.mysql.binaries import find_binary
from catchup.engines.mysql.server import MySQLServer, ServerFiles
from catchup.engines.relay import CountingRelay
from catchup.files import write_private
from impact.measure import Cost, children_usage, metered, shell
from impact.sources import BENCH_PASSWORD, BENCH_USER, Bench, server_pid


def client_config(bench: Bench) -> Path:
    path = bench.root / "bench-client.cnf"
    write_private(
        path,
        f"[client]\nuser={BENCH_USER}\npassword={BENCH_PASSWORD}\n"
        f"[mydumper]\nuser={BENCH_USER}\npassword={BENCH_PASSWORD}\n",
    )
    return path


def relayed_tool(source: MariaDBSandbox, name: str, command: Callable[[int], str]) -> Cost:
    """A tool that pulls everything over the network, through a counting relay."""
    with (
        CountingRelay("127.0.0.1", source.port, None) as relay,
        metered(server_pid(source)) as (meter, clock),
    ):
        output = command(relay.port)
    return Cost(
        name,
        relay.bytes_from_source,
        meter.cpu_seconds,
        meter.read_bytes,
        clock["wall"],
        dir_bytes(Path(output)) if Path(output).is_dir() else Path(output).stat().st_size,
    )


def mariadb_dump(bench: Bench, source: MariaDBSandbox) -> Cost:
    out = bench.root / "dump.sql.zst"
    cnf = client_config(bench)

    def run(port: int) -> str:
        shell(
            f"mariadb-dump --defaults-extra-file={cnf} -h 127.0.0.1 -P {port} "
            "--single-transaction --all-databases --routines --events --triggers "
            f"| zstd -1 -T0 -q > {out}"
        )
        return str(out)

    return relayed_tool(source, "mariadb-dump --single-transaction | zstd -1", run)


def mydumper(bench: Bench, source: MariaDBSandbox) -> Cost:
    out = bench.root / "mydumper"
    shutil.rmtree(out, ignore_errors=True)
    cnf = client_config(bench)

    def run(port: int) -> str:
        shell(
            f"mydumper --defaults-file={cnf} -h 127.0.0.1 -P {port} -t 2 -c "
            f"--trx-consistency-only -o {out}"
        )
        return str(out)

    return relayed_tool(source, "mydumper -t 2 -c", run)


def mariadb_backup(bench: Bench, source: MariaDBSandbox) -> Cost:
    """Run on the source host: its own CPU and reads count as the source's."""
    out = bench.root / "backup.xb.zst"
    scratch = bench.root / "xb-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    cnf = client_config(bench)
    cpu_before, read_before = children_usage()
    with metered(server_pid(source)) as (meter, clock):
        shell(
            f"mariadb-backup --defaults-extra-file={cnf} --socket={source.server.files.socket} "
            f"--backup --stream=xbstream --target-dir={scratch} | zstd -1 -T0 -q > {out}"
        )
    cpu_after, read_after = children_usage()
    size = out.stat().st_size
    return Cost(
        "mariadb-backup --stream | zstd -1 (on the source host)",
        size,  # to be a backup, the stream must leave the host
        meter.cpu_seconds + cpu_after - cpu_before,
        meter.read_bytes + read_after - read_before,
        clock["wall"],
        size,
        {"tool_cpu_seconds": cpu_after - cpu_before},
    )


def pg_basebackup(bench: Bench, source: PostgresSandbox) -> Cost:
    out = bench.root / "basebackup"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(mode=0o700)
    shutil.chown(out, "postgres", "postgres")  # the client runs as postgres when we are root
    password = source.password_file.read_text().strip()

    def run(port: int) -> str:
        command = [
            *source.server.tool("pg_basebackup"),
            "-h", "127.0.0.1", "-p", str(port), "-U", "catchup",
            "-D", str(out), "-X", "stream", "-c", "fast", "--no-sync",
        ]  # fmt: skip
        subprocess.run(
            command, check=True, env={**os.environ, "PGPASSWORD": password}, capture_output=True
        )
        return str(out)

    return relayed_tool(source, "pg_basebackup -X stream", run)  # type: ignore[arg-type]


def mysqldump(bench: Bench, source: MySQLSandbox) -> Cost:
    out = bench.root / "mysqldump.sql.zst"
    cnf = client_config(bench)

    def run(port: int) -> str:
        shell(
            f"{find_binary('mysqldump')} --defaults-extra-file={cnf} -h 127.0.0.1 -P {port} "
            "--protocol=TCP --single-transaction --set-gtid-purged=ON --all-databases "
            f"--routines --events --triggers --hex-blob | zstd -1 -T0 -q > {out}"
        )
        return str(out)

    return relayed_tool(source, "mysqldump --single-transaction | zstd -1", run)


def source_tls(source: MySQLSandbox) -> bool:
    """Whether the source offers TLS: then CLONE uses it, as catchup's clone does."""
    with source.connect() as conn, conn.cursor() as cursor:
        cursor.execute(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('Current_tls_cert', 'Current_tls_version')"
        )
        status = dict(cursor.fetchall())
    return bool(status.get("Current_tls_cert")) and bool(status.get("Current_tls_version"))


def mysql_clone(bench: Bench, source: MySQLSandbox) -> Cost:
    """A raw `CLONE INSTANCE FROM` the source by a scratch mysqld into a directory of its
    own: the full physical copy a clone-based tool takes at every backup (uncompressed)."""
    root = bench.root / "clone-scratch"
    shutil.rmtree(root, ignore_errors=True)
    recipient = MySQLServer(
        ServerFiles(root), 9999, ["--plugin-load-add=mysql_clone.so", "--skip-log-bin"]
    )
    recipient.install()
    recipient.start()
    target = root / "clone"
    tls = "REQUIRE SSL" if source_tls(source) else "REQUIRE NO SSL"
    try:
        with (
            CountingRelay("127.0.0.1", source.port, None) as relay,
            recipient.connect() as conn,
            conn.cursor() as cursor,
        ):
            cursor.execute("SET GLOBAL clone_valid_donor_list = %s", (f"127.0.0.1:{relay.port}",))
            with metered(server_pid(source)) as (meter, clock):
                cursor.execute(
                    f"CLONE INSTANCE FROM %s@'127.0.0.1':%s IDENTIFIED BY %s "
                    f"DATA DIRECTORY = %s {tls}",
                    (BENCH_USER, relay.port, BENCH_PASSWORD, str(target)),
                )
    finally:
        recipient.stop()
    return Cost(
        "CLONE INSTANCE FROM (raw data dir)",
        relay.bytes_from_source,
        meter.cpu_seconds,
        meter.read_bytes,
        clock["wall"],
        dir_bytes(target),
    )
