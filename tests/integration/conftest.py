"""Fixtures that start real servers: mariadbd sandbox sources with configs for them,
the object stores of stores.py and the engines of engines.py. Every test in this
directory needs a server, so each is marked `integration` here: `pytest -m "not
integration"` runs the pure tests alone."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
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

    def add_source(self, server_id: int = 1, size_mb: float = 2) -> MariaDBSandbox:
        source = MariaDBSandbox(self.root / "sandbox" / f"src-{len(self.sources)}", server_id)
        self.sources.append(source)
        source.start()
        source.load_demo_data(size_mb)
        return source

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
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"mariadbd" in cmdline and str(root).encode() in cmdline:
            pids.append(int(proc.name))
    return pids
