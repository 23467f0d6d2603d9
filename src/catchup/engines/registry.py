"""Which engines exist, by the name a config gives them.

Kept apart from the interface in `engines/__init__.py`, which every engine
imports: the registry imports every engine, so the two in one module would be
an import cycle. A new engine is a folder under `engines/` plus one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from catchup.engines import Engine


def _mariadb() -> Engine[Any]:
    from catchup.engines.mariadb import MariaDBEngine

    return MariaDBEngine()


def _mysql() -> Engine[Any]:
    from catchup.engines.mysql import MySQLEngine

    return MySQLEngine()


def _postgres() -> Engine[Any]:
    from catchup.engines.postgres import PostgresEngine

    return PostgresEngine()


# Imported lazily: a command that touches one engine loads only that one's drivers.
ENGINES: dict[str, Callable[[], Engine[Any]]] = {
    "mariadb": _mariadb,
    "mysql": _mysql,
    "postgres": _postgres,
}


def engine_for(name: str) -> Engine[Any]:
    try:
        return ENGINES[name]()
    except KeyError:
        raise ValueError(f"unknown engine {name!r}") from None
