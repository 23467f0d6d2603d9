"""What every engine's cycle instance (`MariaDBReplica`, `PostgresReplica`) has in
common: an ephemeral instance and the source it is fed from. The engine adds how
it bootstraps, starts, catches up and is prepared for the archive; the contract
itself is the `Replica` protocol in engines/__init__.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Generic, Protocol, TypeVar

ServerT = TypeVar("ServerT")
FilesT = TypeVar("FilesT")
SourceT = TypeVar("SourceT")


class ReplicaInstance(Protocol[ServerT, FilesT]):
    """The ephemeral instance a replica runs on, as the shared part sees it."""

    server: ServerT
    files: FilesT

    @property
    def data_dir(self) -> Path: ...

    def server_version(self) -> str: ...


class InstanceReplica(Generic[ServerT, FilesT, SourceT]):
    """An instance together with its source; an engine narrows `instance` to its own
    instance class where it needs more of it."""

    def __init__(
        self, instance: ReplicaInstance[ServerT, FilesT], source: SourceT, stall_timeout: float
    ) -> None:
        self.instance = instance
        self.source = source
        self.stall_timeout = stall_timeout

    @property
    def server(self) -> ServerT:
        return self.instance.server

    @property
    def files(self) -> FilesT:
        return self.instance.files

    @property
    def data_dir(self) -> Path:
        return self.instance.data_dir

    def server_version(self) -> str:
        return self.instance.server_version()
