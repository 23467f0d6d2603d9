"""The two write workloads between backups, each changing `fraction` (1 %) of the
rows of the demo schema's large tables, in 20-row transactions from 4 clients:

- skewed: the shape of a typical OLTP shard. Half of the fraction is new rows
  appended (orders with their 3 items, customers, documents, and all of event_log's
  share: the history that takes most of the bytes), half is updates of random rows
  among the most recent 5 % (the hot set); new orders belong to recent customers.
- uniform: updates of random rows across all the rows of orders (and their items),
  customers and documents. (event_log has no key to pick a random row by: left out.)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pymysql

from catchup.demo.mariadb import MariaDBSandbox
from catchup.demo.shop import DATABASE
from impact.workload import CLIENTS, TXN_ROWS, settle

HOT = 0.05  # the skewed workload's hot set: the most recent 5 % of each table's rows
INSERT_BATCH = 200  # rows per appending transaction
DEADLOCK = 1213  # ER_LOCK_DEADLOCK

Statement = tuple[str, tuple]
Transaction = list[Statement]

UPDATES = {  # table -> SET clause of an update
    "orders": "status = ELT(1 + MOD(id + %s, 4), 'new', 'paid', 'shipped', 'cancelled'), "
    "total = total + 1",
    "customers": "order_count = order_count + 1 + 0 * %s",
    "documents": "body = RANDOM_BYTES(1023 + MOD(%s, 2))",
}


def key_ranges(source: MariaDBSandbox) -> dict[str, tuple[int, int]]:
    with source.connect() as conn, conn.cursor() as cursor:
        cursor.execute(f"USE {DATABASE}")
        ranges = {}
        for table in UPDATES:
            cursor.execute(f"SELECT MIN(id), MAX(id) FROM {table}")
            ranges[table] = cursor.fetchone()
        cursor.execute(
            "SELECT table_rows FROM information_schema.tables "
            "WHERE table_schema = %s AND table_name = 'event_log'",
            (DATABASE,),
        )
        ranges["event_log"] = (1, int(cursor.fetchone()[0]))
    return ranges


def updates(table: str, ids: list[int], round_: int) -> list[Transaction]:
    """UPDATEs of `ids` (and, for orders, their items) in TXN_ROWS-row transactions."""
    out = []
    for start in range(0, len(ids), TXN_ROWS):
        batch = tuple(ids[start : start + TXN_ROWS])
        marks = ", ".join(["%s"] * len(batch))
        txn = [(f"UPDATE {table} SET {UPDATES[table]} WHERE id IN ({marks})", (round_, *batch))]
        if table == "orders":
            txn.append((f"UPDATE order_items SET qty = qty + 1 WHERE order_id IN ({marks})", batch))
        out.append(txn)
    return out


def appends(ranges: dict[str, tuple[int, int]], fraction: float, round_: int) -> list[Transaction]:
    """INSERTs of new rows at the end of every large table (server-generated rows)."""
    low, high = ranges["customers"]
    hot_customers = (high - int((high - low) * HOT), high)
    out: list[Transaction] = []

    def batches(rows: int, make: Callable[[int], Transaction]) -> None:
        for start in range(0, rows, INSERT_BATCH):
            out.append(make(min(INSERT_BATCH, rows - start)))

    orders = int((ranges["orders"][1] - ranges["orders"][0]) * fraction / 2)
    batches(
        orders,
        lambda n: [
            (
                "INSERT INTO orders (customer_id, status, total, note, created_at) "
                f"SELECT %s + seq * 7919 %% %s, 'new', seq %% 500, 'cycle ✓', "
                f"NOW() + INTERVAL seq SECOND FROM seq_1_to_{n}",
                (hot_customers[0], hot_customers[1] - hot_customers[0] + 1),
            ),
            (
                "INSERT INTO order_items (order_id, line, product_id, qty, price) "
                "SELECT LAST_INSERT_ID() + (seq - 1) DIV 3, 1 + (seq - 1) % 3, "
                f"1 + seq * 31 % 1000, 1 + seq % 5, 9.99 FROM seq_1_to_{3 * n}",
                (),
            ),
        ],
    )
    customers = int((high - low) * fraction / 2)
    batches(
        customers,
        lambda n: [
            (
                "INSERT INTO customers (email, name, country, created_at) "
                "SELECT CONCAT('c', %s, '-', UUID_SHORT(), '@example.com'), CONCAT('New ', seq), "
                f"'DE', NOW() FROM seq_1_to_{n}",
                (round_,),
            )
        ],
    )
    documents = int((ranges["documents"][1] - ranges["documents"][0]) * fraction / 2)
    batches(
        documents,
        lambda n: [
            (
                "INSERT INTO documents (customer_id, title, body) "
                f"SELECT %s, CONCAT('Scan ', seq), RANDOM_BYTES(1024) FROM seq_1_to_{n}",
                (hot_customers[1],),
            )
        ],
    )
    events = int(ranges["event_log"][1] * fraction)
    batches(
        events,
        lambda n: [
            (
                "INSERT INTO event_log (happened_at, kind, payload) "
                "SELECT NOW(6), 'view', JSON_OBJECT('session', UUID(), 'n', seq) "
                f"FROM seq_1_to_{n}",
                (),
            )
        ],
    )
    return out


def skewed(ranges: dict[str, tuple[int, int]], fraction: float, round_: int) -> list[Transaction]:
    rng = random.Random(f"skewed-{round_}")
    txns = appends(ranges, fraction, round_)
    for table, (low, high) in ranges.items():
        if table in UPDATES:
            hot_low = high - int((high - low) * HOT)
            count = int((high - low) * fraction / 2)
            txns += updates(table, rng.sample(range(hot_low, high + 1), count), round_)
    return txns


def uniform(ranges: dict[str, tuple[int, int]], fraction: float, round_: int) -> list[Transaction]:
    rng = random.Random(f"uniform-{round_}")
    txns = []
    for table, (low, high) in ranges.items():
        if table in UPDATES:
            txns += updates(
                table, rng.sample(range(low, high + 1), int((high - low) * fraction)), round_
            )
    return txns


WORKLOADS = {"skewed": skewed, "uniform": uniform}


def run_workload(source: MariaDBSandbox, name: str, fraction: float, round_: int) -> int:
    """Apply one round of workload `name`; wait until InnoDB has purged and flushed it.
    Returns the transactions committed."""
    txns = WORKLOADS[name](key_ranges(source), fraction, round_)
    random.Random(round_).shuffle(txns)

    def client(mine: list[Transaction]) -> None:
        with source.connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"USE {DATABASE}")
            cursor.execute("SET autocommit = 0")
            for txn in mine:
                for attempt in range(5):
                    try:
                        for sql, args in txn:
                            cursor.execute(sql, args or None)
                        conn.commit()
                        break
                    except pymysql.err.OperationalError as error:  # a deadlock: again
                        conn.rollback()
                        if error.args[0] != DEADLOCK or attempt == 4:
                            raise

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, [txns[i::CLIENTS] for i in range(CLIENTS)]))
    settle(source)
    return len(txns)
