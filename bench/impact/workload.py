"""The write workload between two backups: OLTP-style updates of a fraction of
the rows of every large table of the demo schema."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from catchup.demo.mariadb import MariaDBSandbox
from catchup.demo.shop import DATABASE

# (table, primary key column, rows per key, SET clause): what the workload changes.
CHANGES = [
    (
        "orders",
        "id",
        1,
        "total = total + 1, status = ELT(1 + MOD(id + {round}, 4), "
        "'new', 'paid', 'shipped', 'cancelled')",
    ),
    ("order_items", "order_id", 3, "qty = qty + 1"),
    ("customers", "id", 1, "order_count = order_count + 1"),
    ("documents", "id", 1, "body = RANDOM_BYTES(1024)"),
]
TXN_ROWS = 20  # rows per transaction of the write workload
CLIENTS = 4  # its connections


def binlog_bytes(source: MariaDBSandbox) -> int:
    with source.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        return sum(int(row[1]) for row in cursor.fetchall())


def change_rows(source: MariaDBSandbox, fraction: float, round_: int) -> dict[str, float]:
    """Change `fraction` of every large table's rows: OLTP-style, CLIENTS connections
    each committing TXN_ROWS-row transactions."""
    ranges = []  # (table, key, assignment, first key, last key) of each transaction
    with source.connect() as conn, conn.cursor() as cursor:
        cursor.execute(f"USE {DATABASE}")
        for table, key, per_key, assignment in CHANGES:
            cursor.execute(f"SELECT MIN({key}), MAX({key}) FROM {table}")
            low, high = cursor.fetchone()
            keys = high - low + 1
            todo = max(1, int(keys * fraction))  # keys; a key holds `per_key` rows
            start = low + (round_ * 7919) % keys
            step = max(1, TXN_ROWS // per_key)
            for offset in range(0, todo, step):
                first = low + (start - low + offset) % keys
                last = min(first + min(step, todo - offset) - 1, high)
                ranges.append((table, key, assignment.format(round=round_), first, last))

    def client(mine: list[tuple[str, str, str, int, int]]) -> int:
        changed = 0
        with source.connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"USE {DATABASE}")
            for table, key, assignment, first, last in mine:
                cursor.execute(
                    f"UPDATE {table} SET {assignment} WHERE {key} BETWEEN %s AND %s",
                    (first, last),
                )
                changed += cursor.rowcount
                conn.commit()
        return changed

    before = binlog_bytes(source)
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        changed = sum(pool.map(client, [ranges[i::CLIENTS] for i in range(CLIENTS)]))
    seconds = time.monotonic() - started
    delta = binlog_bytes(source) - before
    settle(source)
    return {"rows": changed, "seconds": seconds, "binlog_bytes": delta, "rate": delta / seconds}


def settle(source: MariaDBSandbox, timeout: float = 600) -> None:
    """Wait until InnoDB has purged and flushed the workload, so its background
    I/O is not counted against the next backup."""
    source.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
    deadline = time.monotonic() + timeout
    try:
        with source.connect() as conn, conn.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
                dirty = int(cursor.fetchone()[1])
                cursor.execute("SHOW ENGINE INNODB STATUS")
                status = cursor.fetchone()[2]
                history = int(status.split("History list length", 1)[1].split()[0])
                if dirty == 0 and history < 100:
                    return
                time.sleep(0.5)
    finally:
        source.execute("SET GLOBAL innodb_max_dirty_pages_pct = 90")
