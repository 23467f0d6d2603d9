"""What every engine's `Source` (`MariaDBSource`, `PostgresSource`) has in common: a
session with the shard's server, reached through the cycle's counting relay. The
engine adds its own questions; the contract itself is the `Source` protocol in
engines/__init__.py.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from catchup.config import Shard
from catchup.engines.relay import CountingRelay
from catchup.errors import SourceError


class Versioned(Protocol):
    @property
    def version(self) -> str: ...


class Session(Protocol):
    """An engine's session with its source, as the shared part sees it."""

    @property
    def shard(self) -> Shard: ...

    def facts(self) -> Versioned: ...


SessionT = TypeVar("SessionT", bound=Session)


class RelayedSource(Generic[SessionT]):
    def __init__(self, session: SessionT, relay: CountingRelay) -> None:
        self.session = session
        self.relay = relay

    @property
    def bytes_sent(self) -> int:
        return self.relay.bytes_from_source

    def server_version(self) -> str:
        return self.session.facts().version

    def not_ready(self, setting: str) -> SourceError:
        """The error of a source whose `setting` (its value and the fix) rules out a cycle."""
        shard = self.session.shard
        return SourceError(f"shard {shard.name}: source {shard.endpoint} has {setting}")
