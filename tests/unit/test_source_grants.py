"""The statements an operator runs on a source exist once, in the engine: the
README shows exactly them, and the sandboxes run them."""

from __future__ import annotations

import re

from catchup.engines.mariadb.source import REQUIRED_PRIVILEGES, SOURCE_GRANT
from catchup.engines.postgres.source import SOURCE_GRANTS, SOURCE_ROLE
from tests.conftest import REPO


def readme_sql_block(containing: str) -> list[str]:
    """The statements of the README's ```sql block that contains `containing`."""
    blocks = re.findall(r"```sql\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    [block] = [b for b in blocks if containing in b]
    statements = (" ".join(s.split()) for s in block.split(";"))
    return [s for s in statements if s]


def test_the_readme_shows_the_mariadb_grant_the_engine_checks() -> None:
    statements = readme_sql_block("BINLOG MONITOR")
    assert statements == ["CREATE USER 'catchup'@'%' IDENTIFIED BY '…'", SOURCE_GRANT]
    granted = SOURCE_GRANT.removeprefix("GRANT ").partition(" ON ")[0].split(", ")
    assert granted == list(REQUIRED_PRIVILEGES)


def test_the_readme_shows_the_postgres_role_the_sandboxes_create() -> None:
    statements = readme_sql_block("CREATE ROLE catchup")
    assert statements == [SOURCE_ROLE.format("'…'"), *SOURCE_GRANTS]


def test_the_readme_shows_the_mysql_grant_the_engine_checks() -> None:
    from catchup.engines.mysql.source import REQUIRED_PRIVILEGES as MYSQL_PRIVILEGES
    from catchup.engines.mysql.source import SOURCE_GRANT as MYSQL_GRANT

    statements = readme_sql_block("BACKUP_ADMIN")
    assert statements == ["CREATE USER 'catchup'@'%' IDENTIFIED BY '…'", MYSQL_GRANT]
    granted = MYSQL_GRANT.removeprefix("GRANT ").partition(" ON ")[0].split(", ")
    assert granted == list(MYSQL_PRIVILEGES)
