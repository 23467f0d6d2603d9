"""The MariaDB demo dataset, "shop": a schema with the shapes replication must
carry (Unicode, JSON, BLOBs, a table without a primary key, a view, a
procedure, a trigger), rows generated on the server, and a write workload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pymysql.cursors import Cursor

from catchup.engines.mariadb.server import select_row

DATABASE = "shop"


@dataclass(frozen=True)
class RowCounts:
    """Rows per table for a target data size: size_mb of InnoDB data and indexes."""

    customers: int
    products: int
    orders: int
    items: int
    documents: int
    events: int

    @classmethod
    def for_size(cls, size_mb: float) -> RowCounts:
        scale = max(size_mb, 1.0) * 4 / 3  # measured: 75 MB of tables per 100 at scale 1
        return cls(
            customers=int(400 * scale),
            products=1000,
            orders=int(2000 * scale),
            items=int(3000 * scale),
            documents=int(110 * scale),
            events=int(700 * scale),
        )


SCHEMA = [
    f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4",
    """CREATE TABLE customers (
        id INT UNSIGNED PRIMARY KEY AUTO_INCREMENT,
        email VARCHAR(120) NOT NULL,
        name VARCHAR(100) CHARACTER SET utf8mb4 NOT NULL,
        country CHAR(2) NOT NULL,
        created_at DATETIME NOT NULL,
        order_count INT NOT NULL DEFAULT 0,
        UNIQUE KEY email (email),
        KEY country_created (country, created_at)) ENGINE=InnoDB""",
    """CREATE TABLE products (
        id INT PRIMARY KEY AUTO_INCREMENT,
        sku VARCHAR(32) NOT NULL,
        title VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL,
        price DECIMAL(10,2) NOT NULL,
        attributes JSON,
        UNIQUE KEY sku (sku),
        KEY price (price)) ENGINE=InnoDB""",
    """CREATE TABLE orders (
        id BIGINT UNSIGNED PRIMARY KEY AUTO_INCREMENT,
        customer_id INT UNSIGNED NOT NULL,
        status ENUM('new','paid','shipped','cancelled') NOT NULL,
        total DECIMAL(12,2) NOT NULL,
        note VARCHAR(255) CHARACTER SET utf8mb4,
        created_at DATETIME NOT NULL,
        KEY customer (customer_id),
        KEY status_created (status, created_at)) ENGINE=InnoDB""",
    """CREATE TABLE order_items (
        order_id BIGINT UNSIGNED NOT NULL,
        line SMALLINT NOT NULL,
        product_id INT NOT NULL,
        qty INT NOT NULL,
        price DECIMAL(10,2) NOT NULL,
        PRIMARY KEY (order_id, line),
        KEY product (product_id)) ENGINE=InnoDB""",
    """CREATE TABLE documents (
        id INT PRIMARY KEY AUTO_INCREMENT,
        customer_id INT UNSIGNED NOT NULL,
        title VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL,
        body MEDIUMBLOB NOT NULL,
        KEY customer (customer_id)) ENGINE=InnoDB""",
    # No primary key: replication must still apply row events to it.
    """CREATE TABLE event_log (
        happened_at DATETIME(6) NOT NULL,
        kind VARCHAR(20) NOT NULL,
        payload JSON) ENGINE=InnoDB""",
    """CREATE VIEW customer_revenue AS
        SELECT c.id, c.email, SUM(o.total) AS revenue
        FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.email""",
    """CREATE PROCEDURE cancel_stale_orders(IN older_than_id BIGINT)
        UPDATE orders SET status = 'cancelled' WHERE status = 'new' AND id < older_than_id""",
]

TRIGGER = """CREATE TRIGGER count_orders AFTER INSERT ON orders FOR EACH ROW
    UPDATE customers SET order_count = order_count + 1 WHERE id = NEW.customer_id"""


def fill_statements(rows: RowCounts, numbers: Callable[[int], str]) -> list[str]:
    """Server-side generated rows (`numbers(n)`: a table of seq = 1..n), fast and without
    client traffic."""
    return [
        f"""INSERT INTO customers (email, name, country, created_at)
            SELECT CONCAT('user', seq, '@example.com'),
                   CONCAT(ELT(1 + seq % 5, 'Zoë', 'José', 'Łukasz', 'Ayşe', '李雷'), ' ', seq),
                   ELT(1 + seq % 6, 'DE', 'FR', 'PL', 'TR', 'CN', 'US'),
                   '2024-01-01' + INTERVAL (seq * 37) MINUTE
            FROM {numbers(rows.customers)}""",
        f"""INSERT INTO products (sku, title, price, attributes)
            SELECT CONCAT('SKU-', LPAD(seq, 8, '0')), CONCAT('Product ', seq, ' ✓'),
                   ROUND(1 + (seq * 7919) % 50000 / 100, 2),
                   JSON_OBJECT('color', ELT(1 + seq % 4, 'red', 'green', 'blue', 'black'),
                               'weight_g', seq % 2000, 'tags', JSON_ARRAY('a', seq % 10))
            FROM {numbers(rows.products)}""",
        f"""INSERT INTO orders (customer_id, status, total, note, created_at)
            SELECT 1 + (seq * 7) % {rows.customers},
                   ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'),
                   ROUND((seq * 104729) % 100000 / 100, 2),
                   IF(seq % 3 = 0, CONCAT('deliver after ', seq % 24, 'h — merci'), NULL),
                   '2024-01-01' + INTERVAL (seq * 3) MINUTE
            FROM {numbers(rows.orders)}""",
        f"""INSERT INTO order_items (order_id, line, product_id, qty, price)
            SELECT 1 + (seq - 1) DIV 3, 1 + (seq - 1) % 3, 1 + (seq * 31) % {rows.products},
                   1 + seq % 5,
                   ROUND(1 + (seq * 13) % 9000 / 100, 2)
            FROM {numbers(rows.items)}""",
        f"""INSERT INTO documents (customer_id, title, body)
            SELECT 1 + seq % {rows.customers}, CONCAT('Scan ', seq, ' 📄'),
                   IF(seq % 2, RANDOM_BYTES(1024),
                      REPEAT(CONCAT('invoice line ', seq, ' amount ', seq % 977, '\n'), 40))
            FROM {numbers(rows.documents)}""",
        f"""INSERT INTO event_log (happened_at, kind, payload)
            SELECT '2024-01-01' + INTERVAL seq SECOND, ELT(1 + seq % 3, 'login', 'view', 'buy'),
                   JSON_OBJECT('session', LEFT(SHA2(seq, 256), 32), 'n', seq)
            FROM {numbers(rows.events)}""",
        TRIGGER,
        """UPDATE customers c JOIN (SELECT customer_id, COUNT(*) n FROM orders
            GROUP BY customer_id) o ON o.customer_id = c.id SET c.order_count = o.n""",
    ]


def number_table(cursor: Cursor) -> Callable[[int], str]:
    """The server's table of the numbers 1..n: MariaDB's Sequence engine, or on MySQL (which
    has none) a recursive common table expression."""
    (version,) = select_row(cursor, "SELECT VERSION()")
    if "mariadb" in str(version).lower():
        return lambda n: f"seq_1_to_{n}"
    cursor.execute("SET SESSION cte_max_recursion_depth = 100000000")
    return lambda n: (
        f"(WITH RECURSIVE numbers (seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM numbers "
        f"WHERE seq < {n}) SELECT seq FROM numbers) AS numbers"
    )


def load(cursor: Cursor, size_mb: float) -> None:
    """Create the schema and about `size_mb` of rows."""
    numbers = number_table(cursor)
    cursor.execute(SCHEMA[0])
    cursor.execute(f"USE {DATABASE}")
    for statement in [*SCHEMA[1:], *fill_statements(RowCounts.for_size(size_mb), numbers)]:
        cursor.execute(statement)


def apply_workload(cursor: Cursor, fraction: float, round_: int, batch: int = 200) -> None:
    """Change about `fraction` of the rows in many small transactions, plus DDL and a
    procedure call; `round_` makes each round's changes differ."""
    run = cursor.execute
    numbers = number_table(cursor)
    run(f"USE {DATABASE}")
    orders, max_id = select_row(cursor, "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM orders")
    (customers,) = select_row(cursor, "SELECT COUNT(*) FROM customers")
    changes = max(3, int(orders * fraction))
    for start in range(0, changes, batch):
        n = min(batch, changes - start)
        run(
            "INSERT INTO orders (customer_id, status, total, note, created_at) "
            "SELECT 1 + (seq * 11) %% %s, 'new', seq %% 500, 'workload ✓', "
            "'2025-06-01' + INTERVAL seq MINUTE FROM " + numbers(n // 2 + 1),
            (customers,),
        )
        run(
            "UPDATE orders SET status = 'shipped', total = total + 1 WHERE id BETWEEN %s AND %s",
            (1 + (start * 7) % max(1, max_id), 1 + (start * 7) % max(1, max_id) + n // 3),
        )
        run("DELETE FROM event_log ORDER BY happened_at LIMIT %s", (n // 6 + 1,))
    run("UPDATE documents SET body = RANDOM_BYTES(900) WHERE id %% 97 = %s", (round_ % 97,))
    run("CALL cancel_stale_orders(%s)", (max_id // 50,))
    (has_loyalty,) = select_row(
        cursor,
        "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'customers' AND column_name = 'loyalty'",
        (DATABASE,),
    )
    if not has_loyalty:  # MySQL has no ADD COLUMN IF NOT EXISTS
        run("ALTER TABLE customers ADD COLUMN loyalty TINYINT NOT NULL DEFAULT 0")
    run(f"ALTER TABLE products COMMENT = 'workload {round_}'")
