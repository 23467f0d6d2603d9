"""What the demo, the tests and the benchmarks ask of a sandbox source, whatever
its engine."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Sandbox(Protocol):
    """A real source server on a private port, with a `catchup` account."""

    engine: str  # the engine name a shard of this source has in the config
    password_file: Path  # the catchup account's password, for the config's credentials

    @property
    def endpoint(self) -> str:
        """host:port for the config's `source`."""
        ...

    def start(self) -> None:
        """Create the server on first start (with the catchup account), and start it."""
        ...

    def load_demo_data(self, size_mb: float) -> None: ...

    def apply_workload(self, fraction: float = 0.03) -> None:
        """Writes touching about `fraction` of the rows, so a cycle has a delta."""
        ...

    def position(self) -> str:
        """The source's current log position, in its engine's notation."""
        ...

    def quiesced_at(self, position: str) -> bool:
        """Nothing was written since `position` (a backup's): the backup equals the source."""
        ...

    def checksums(self) -> dict[str, int | None]:
        """Every user table's checksum, as the engine's verify computes it on a backup."""
        ...

    def wait_replicated(self, timeout: float = 60) -> None:
        """A replica sandbox: block until it has applied all its primary has."""
        ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...
