"""Fixtures that start real servers: mariadbd sandbox sources with configs for them,
the object stores of stores.py and the engines of engines.py. Every test in this
directory needs a server, so each is marked `integration` here: `pytest -m "not
integration"` runs the pure tests alone."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from catchup.cancel import CancelToken
from catchup.config import Config, parse_config
from catchup.cycle import CycleOptions, LogReporter, Reporter
from catchup.demo.mariadb import MariaDBSandbox
from catchup.demo.run import demo_config
from catchup.fleet.run import ShardResult, backup_fleet
from catchup.repository import Repository, open_repository
from tests.integration.engines import engine
from tests.integration.processes import processes_under
from tests.integration.stores import azurite_port, moto_port, store

__all__ = ["azurite_port", "engine", "moto_port", "store"]  # fixtures for every module here
INTEGRATION = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)


@dataclass
class Fleet:
    """Sandbox sources, a config pointing at them, and its repository."""

    root: Path
    sources: list[MariaDBSandbox] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "catchup.toml"

    def write_config(
        self,
        sources: list[MariaDBSandbox] | None = None,
        role: str = "primary",
        repository: str | None = None,
        tables: str = "",
    ) -> Config:
        # Tests fail fast on a stall instead of waiting out the production default.
        text = demo_config(self.root, sources or self.sources, 2, role, repository)
        self.config_path.write_text("stall_timeout_seconds = 20\n" + text + tables)
        return self.config

    @property
    def config(self) -> Config:
        return parse_config(tomllib.loads(self.config_path.read_text()), "catchup.toml")

    @property
    def repository(self) -> Repository:
        return open_repository(self.config)

    def backup(
        self,
        options: CycleOptions | None = None,
        reporter: Reporter | None = None,
        cancel: CancelToken | None = None,
    ) -> list[ShardResult]:
        config = self.config
        return backup_fleet(
            config,
            config.shards,
            self.repository,
            options or CycleOptions(),
            reporter or LogReporter(),
            cancel or CancelToken(),
        )

    def backup_then_catch_up(self, change: Callable[[], object]) -> ShardResult:
        """Back the one shard up, make `change` on its source, and back it up again: the
        second backup must be a good catch-up, which is returned."""
        [first] = self.backup()
        assert first.ok, first.error
        change()
        [second] = self.backup()
        assert second.ok and second.kind == "catchup", second.error
        return second

    def add_source(self, server_id: int = 1, size_mb: float = 2) -> MariaDBSandbox:
        source = MariaDBSandbox(self.root / "sandbox" / f"src-{len(self.sources)}", server_id)
        self.sources.append(source)
        source.start()
        source.load_demo_data(size_mb)
        return source

    def add_replica(self, primary: MariaDBSandbox, server_id: int) -> MariaDBSandbox:
        """A replica of `primary`, started and caught up with it."""
        replica = MariaDBSandbox(self.root / "sandbox" / "replica", server_id, replica_of=primary)
        self.sources.append(replica)
        replica.start()
        replica.wait_replicated()
        return replica

    def instance_dirs(self) -> list[Path]:
        instances = self.root / "work" / "instances"
        return list(instances.iterdir()) if instances.exists() else []


@pytest.fixture
def fleet(short_tmp: Path) -> Iterator[Fleet]:
    fleet = Fleet(short_tmp)
    yield fleet
    for source in fleet.sources:
        source.kill()


def mariadbd_processes_under(root: Path) -> list[int]:
    """Pids of mariadbd processes whose command line mentions `root`."""
    return processes_under(root, b"mariadbd")
