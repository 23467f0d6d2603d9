"""Sandbox sources for the demo and the tests: real mariadbd primaries with
binlog and GTID on private ports, a realistic schema, and a write workload.

The catchup account gets exactly the GRANT the README documents, so every demo
and test run proves that GRANT is sufficient.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

from catchup.engines.mariadb import table_checksums
from catchup.engines.mariadb.server import MariaDBServer, ServerFiles, kill_server_in
from catchup.engines.relay import free_port
from catchup.files import write_private

SOURCE_GRANT = (
    "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, BINLOG MONITOR, REPLICATION SLAVE, "
    "RELOAD ON *.* TO 'catchup'@'%'"
)
SOURCE_OPTIONS = [
    "--log-bin=binlog",
    "--binlog-format=MIXED",
    "--log-slave-updates=ON",
    "--gtid-strict-mode=1",
    "--innodb-buffer-pool-size=128M",
    "--innodb-log-file-size=64M",
    # A sandbox, not production: trade durability for speed.
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
]
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


def fill_statements(rows: RowCounts) -> list[str]:
    """Server-side generated rows (Sequence engine): fast and without client traffic."""
    return [
        f"""INSERT INTO customers (email, name, country, created_at)
            SELECT CONCAT('user', seq, '@example.com'),
                   CONCAT(ELT(1 + seq % 5, 'Zoë', 'José', 'Łukasz', 'Ayşe', '李雷'), ' ', seq),
                   ELT(1 + seq % 6, 'DE', 'FR', 'PL', 'TR', 'CN', 'US'),
                   '2024-01-01' + INTERVAL (seq * 37) MINUTE
            FROM seq_1_to_{rows.customers}""",
        f"""INSERT INTO products (sku, title, price, attributes)
            SELECT CONCAT('SKU-', LPAD(seq, 8, '0')), CONCAT('Product ', seq, ' ✓'),
                   ROUND(1 + (seq * 7919) % 50000 / 100, 2),
                   JSON_OBJECT('color', ELT(1 + seq % 4, 'red', 'green', 'blue', 'black'),
                               'weight_g', seq % 2000, 'tags', JSON_ARRAY('a', seq % 10))
            FROM seq_1_to_{rows.products}""",
        f"""INSERT INTO orders (customer_id, status, total, note, created_at)
            SELECT 1 + (seq * 7) % {rows.customers},
                   ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'),
                   ROUND((seq * 104729) % 100000 / 100, 2),
                   IF(seq % 3 = 0, CONCAT('deliver after ', seq % 24, 'h — merci'), NULL),
                   '2024-01-01' + INTERVAL (seq * 3) MINUTE
            FROM seq_1_to_{rows.orders}""",
        f"""INSERT INTO order_items (order_id, line, product_id, qty, price)
            SELECT 1 + (seq - 1) DIV 3, 1 + (seq - 1) % 3, 1 + (seq * 31) % {rows.products},
                   1 + seq % 5,
                   ROUND(1 + (seq * 13) % 9000 / 100, 2)
            FROM seq_1_to_{rows.items}""",
        f"""INSERT INTO documents (customer_id, title, body)
            SELECT 1 + seq % {rows.customers}, CONCAT('Scan ', seq, ' 📄'),
                   IF(seq % 2, RANDOM_BYTES(1024),
                      REPEAT(CONCAT('invoice line ', seq, ' amount ', seq % 977, '\n'), 40))
            FROM seq_1_to_{rows.documents}""",
        f"""INSERT INTO event_log (happened_at, kind, payload)
            SELECT '2024-01-01' + INTERVAL seq SECOND, ELT(1 + seq % 3, 'login', 'view', 'buy'),
                   JSON_OBJECT('session', MD5(seq), 'n', seq)
            FROM seq_1_to_{rows.events}""",
        TRIGGER,
        """UPDATE customers c JOIN (SELECT customer_id, COUNT(*) n FROM orders
            GROUP BY customer_id) o ON o.customer_id = c.id SET c.order_count = o.n""",
    ]


class SandboxSource:
    """One sandbox primary with its `catchup` account and the demo schema."""

    engine = "mariadb"

    def __init__(
        self,
        root: Path,
        server_id: int,
        binaries: Path | None = None,
        replica_of: SandboxSource | None = None,
    ) -> None:
        self.root = root
        self.replica_of = replica_of
        self.port = free_port()
        self.server = MariaDBServer(
            ServerFiles(root),
            server_id,
            SOURCE_OPTIONS,
            binaries=binaries,
            port=self.port,
            die_with_parent=False,  # `demo --keep` leaves the fleet running
            # Not catchup's admin name: the bootstrap carries the source's accounts.
            admin_user="sandbox_admin",
        )
        # A replica gets its accounts, the catchup one included, from its primary.
        self.password_file = (replica_of or self).root / "catchup.password"
        self.workloads = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        fresh = not self.server.files.data_dir.exists()
        if fresh:
            self.server.install()
        self.server.start()
        if fresh and self.replica_of:
            self._replicate_from(self.replica_of)
        elif fresh:
            password = secrets.token_urlsafe(18)
            write_private(self.password_file, password + "\n")
            self.execute("CREATE USER 'catchup'@'%%' IDENTIFIED BY %s", (password,))
            self.execute(SOURCE_GRANT)

    def _replicate_from(self, primary: SandboxSource) -> None:
        self.execute(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER='catchup', "
            "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos",
            (primary.port, primary.password_file.read_text().strip()),
        )
        self.execute("START SLAVE")

    def wait_replicated(self, timeout: float = 60) -> None:
        """Block until this replica has applied everything its primary has logged."""
        assert self.replica_of is not None
        target = self.replica_of.position()
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (target, timeout))
            if cursor.fetchone()[0] != 0:
                raise RuntimeError(f"replica did not reach {target} in {timeout}s")

    def stop(self) -> None:
        self.server.stop()

    @staticmethod
    def kill_leftover(root: Path) -> None:
        kill_server_in(root)

    def kill(self) -> None:
        self.server.kill()

    def connect(self) -> pymysql.Connection:
        return self.server.connect()

    def execute(self, sql: str, args: tuple[object, ...] | None = None) -> None:
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute(sql, args)

    def load_demo_data(self, size_mb: float) -> None:
        self.execute(SCHEMA[0])
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"USE {DATABASE}")
            for statement in [*SCHEMA[1:], *fill_statements(RowCounts.for_size(size_mb))]:
                cursor.execute(statement)

    def apply_workload(self, fraction: float = 0.03, batch: int = 200) -> int:
        """Change about `fraction` of the rows in many small transactions, plus DDL,
        a procedure call and an account change. Returns the transactions run."""
        self.workloads += 1
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"USE {DATABASE}")
            cursor.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM orders")
            orders, max_id = cursor.fetchone()
            cursor.execute("SELECT COUNT(*) FROM customers")
            (customers,) = cursor.fetchone()
            changes = max(3, int(orders * fraction))
            transactions = 0
            for start in range(0, changes, batch):
                n = min(batch, changes - start)
                cursor.execute(
                    "INSERT INTO orders (customer_id, status, total, note, created_at) "
                    "SELECT 1 + (seq * 11) %% %s, 'new', seq %% 500, 'workload ✓', "
                    "'2025-06-01' + INTERVAL seq MINUTE FROM seq_1_to_" + str(n // 2 + 1),
                    (customers,),
                )
                cursor.execute(
                    "UPDATE orders SET status = 'shipped', total = total + 1 "
                    "WHERE id BETWEEN %s AND %s",
                    (1 + (start * 7) % max(1, max_id), 1 + (start * 7) % max(1, max_id) + n // 3),
                )
                cursor.execute("DELETE FROM event_log ORDER BY happened_at LIMIT %s", (n // 6 + 1,))
                transactions += 3
            cursor.execute(
                "UPDATE documents SET body = RANDOM_BYTES(900) WHERE id %% 97 = %s",
                (self.workloads % 97,),
            )
            cursor.execute("CALL cancel_stale_orders(%s)", (max_id // 50,))
            cursor.execute(
                "ALTER TABLE customers ADD COLUMN IF NOT EXISTS loyalty TINYINT NOT NULL DEFAULT 0"
            )
            cursor.execute(f"ALTER TABLE products COMMENT = 'workload {self.workloads}'")
            return transactions + 4

    def grant_new_account(self, name: str) -> None:
        """A GRANT after the bootstrap: catch-up must carry it (accounts are in the backup)."""
        self.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'not-a-secret'")
        self.execute(f"GRANT SELECT ON {DATABASE}.* TO '{name}'@'%'")

    def position(self) -> str:
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT @@gtid_binlog_pos")
            return cursor.fetchone()[0]

    def quiesced_at(self, position: str) -> bool:
        """The source has logged nothing since `position`."""
        return self.position() == position

    def checksums(self) -> dict[str, int | None]:
        with self.connect() as conn, conn.cursor() as cursor:
            return table_checksums(cursor)

    def purge_binlogs(self) -> None:
        """Rotate and purge every binlog but the newest: the delta since any backup is gone."""
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute("FLUSH BINARY LOGS")
            cursor.execute("SHOW BINARY LOGS")
            newest = cursor.fetchall()[-1][0]
            # A binlog stays "in use" until InnoDB's binlog checkpoint passes it,
            # and PURGE skips such files silently: retry until they are gone.
            deadline = time.monotonic() + 30
            while True:
                cursor.execute("PURGE BINARY LOGS TO %s", (newest,))
                cursor.execute("SHOW BINARY LOGS")
                if cursor.fetchall()[0][0] == newest:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"binlogs before {newest} could not be purged")
                time.sleep(0.1)
