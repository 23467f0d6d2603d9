"""Shard leases: who may write a shard now, wherever the writers run.

Modelled on Litestream's small `Leaser` interface. A `Leaser` hands out a
shard's `Lease` or refuses with `ShardBusyError`; a lease can be renewed,
confirmed (checked afresh at its source of truth) and released. `hold` takes
several at once (the host's flock, then the repository lease), renews them in
a background thread at a third of the shortest TTL, and cancels the holder's
cycle the moment one is lost.

The repository lease is one object per shard, `<keyspace>/<shard>/lease.json`,
beside the backups (`parse_key` never takes it for one). It names its holder
(host, boot id, pid and its start time, a random token) and when it expires.
It is created with a create-if-absent put and renewed, released or taken over
only by compare-and-swap on its version, so of two runners exactly one wins,
on any host that reaches the repository.

Clocks: a lease's expiry is written in the holder's UTC clock and judged in
the reader's. Hosts sharing a repository must agree to within a few seconds
(NTP). A reader whose clock runs ahead by more than the TTL may take over a
live lease early; the holder then loses its next renewal or its commit-time
confirmation and stops without committing, so the worst outcome is a
cancelled cycle. The holder itself counts its lease's life on the monotonic
clock from the start of its last successful write, and treats it as lost
when that runs out without a renewal.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from catchup.cancel import CancelToken
from catchup.errors import Cancelled, CatchupError, ShardBusyError
from catchup.storage import StorageError, Store

log = logging.getLogger("catchup.lease")
LEASE_OBJECT = "lease.json"


@dataclass(frozen=True)
class Purpose:
    """What a lease is for: backups and prunes share one, each shard's archiver has its
    own (it runs all the time, beside the cycles)."""

    lease_object: str  # under <keyspace>/<shard>/
    lock_file: str  # the flock's file name suffix
    busy: str  # "shard x/y <busy> by <holder>"
    advice: str


BACKUP = Purpose(LEASE_OBJECT, "", "is being backed up or pruned", "wait for that run to finish")
ARCHIVE = Purpose(
    "archive/lease.json",
    ".archive",
    "is being archived",
    "only one archiver per shard runs; stop the other one or let it be",
)


class LeaseLostError(CatchupError):
    """A lease was taken over, or could not be renewed before it expired."""


class Lease(Protocol):
    ttl: float | None  # seconds it lasts without renewal; None: as long as its holder lives

    def renew(self) -> None:
        """Extend the lease; raise LeaseLostError once it is gone (a passing error is not)."""
        ...

    def confirm(self) -> None:
        """Check afresh, at the source of truth, that the lease is still held, or raise."""
        ...

    def release(self) -> None:
        """Give the lease up, best effort: an unreleased one expires or is reclaimed."""
        ...


class Leaser(Protocol):
    def acquire(self, keyspace: str, shard: str) -> Lease:
        """The shard's lease, or ShardBusyError naming who holds it."""
        ...


# --- holding leases ---------------------------------------------------------


class Held:
    """The leases a runner holds for one shard, and the cancel token they guard."""

    def __init__(self, name: str, leases: list[Lease], cancel: CancelToken) -> None:
        self.name = name
        self.leases = leases
        self.cancel = cancel
        self.lost: str | None = None

    def confirm(self) -> None:
        """Raise LeaseLostError unless every lease is held right now (a commit's last check)."""
        for lease in self.leases:
            try:
                lease.confirm()
            except LeaseLostError as exc:
                self.lose(str(exc))
                raise
            except StorageError as exc:
                raise LeaseLostError(
                    f"shard {self.name}: cannot confirm the lease before committing: {exc}"
                ) from None

    def lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
            log.error("%s", why)
            self.cancel.cancel(why)

    def renew_until(self, stopped: threading.Event) -> None:
        ttls = [lease.ttl for lease in self.leases if lease.ttl]
        if not ttls:
            return
        while not stopped.wait(min(ttls) / 3):
            for lease in self.leases:
                try:
                    lease.renew()
                except LeaseLostError as exc:
                    self.lose(str(exc))
                    return
                except Exception:  # keep trying: the commit confirms the lease anyway
                    log.exception("shard=%s lease renewal failed unexpectedly", self.name)


@contextmanager
def hold(
    leasers: Sequence[Leaser], keyspace: str, shard: str, cancel: CancelToken
) -> Iterator[Held]:
    """Take every leaser's lease, in order, and keep them until the block ends.

    The block runs under `held.cancel`, which a lost lease cancels; a block that
    then ends in `Cancelled` ends in LeaseLostError instead, so it reads as a
    failure, not as an operator's interruption.
    """
    with ExitStack() as stack:
        token = stack.enter_context(cancel.child())
        leases: list[Lease] = []
        for leaser in leasers:
            lease = leaser.acquire(keyspace, shard)
            stack.callback(lease.release)
            leases.append(lease)
        held = Held(f"{keyspace}/{shard}", leases, token)
        stopped = threading.Event()
        renewer = threading.Thread(
            target=held.renew_until, args=(stopped,), name=f"lease-{keyspace}-{shard}", daemon=True
        )
        renewer.start()
        stack.callback(renewer.join)
        stack.callback(stopped.set)
        try:
            yield held
        except Cancelled as exc:
            if held.lost:
                why = f"{held.lost}; the cycle stopped and committed nothing"
                raise LeaseLostError(why) from exc
            raise


# --- the repository lease ---------------------------------------------------


@dataclass(frozen=True)
class Holder:
    host: str
    boot_id: str  # with the pid namespace: whether a pid here means the holder's process
    pid: int
    started: str  # the process's start time in clock ticks since boot, from /proc
    token: str
    pid_namespace: str = ""

    @classmethod
    def this_process(cls) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), pid, _started(pid), "", _pid_namespace())

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"

    @property
    def place(self) -> tuple[str, str, str]:
        """Where its pid means its process: host, boot and pid namespace."""
        return self.host, self.boot_id, self.pid_namespace

    def dead_here(self, here: Holder) -> bool:
        """A holder of this very machine and pid namespace whose process has ended."""
        if not (self.boot_id and self.pid_namespace) or self.place != here.place:
            return False
        started = _started(self.pid)
        if started:
            return started != self.started  # a reused pid is another process
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, though /proc hides it from us
        return False


@dataclass(frozen=True)
class Record:
    holder: Holder
    acquired_at: datetime
    expires_at: datetime
    released: bool = False  # given up on purpose: taking it over is routine, not news

    def encode(self) -> bytes:
        document = {
            "holder": asdict(self.holder),
            "acquired_at": self.acquired_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "released": self.released,
        }
        return json.dumps(document, indent=1).encode()

    @classmethod
    def decode(cls, blob: bytes) -> Record | None:
        """The record, or None for an unreadable object (which protects nothing)."""
        try:
            document = json.loads(blob)
            record = cls(
                Holder(**document["holder"]),
                datetime.fromisoformat(document["acquired_at"]),
                datetime.fromisoformat(document["expires_at"]),
                bool(document.get("released", False)),
            )
        except (ValueError, TypeError, KeyError):
            return None
        return record if record.expires_at.tzinfo else None


class RepositoryLeaser:
    """Leases as objects in the repository itself: they work across hosts."""

    def __init__(
        self,
        store: Store,
        ttl: float,
        identity: Holder | None = None,
        purpose: Purpose | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.identity = identity or Holder.this_process()
        self.purpose = purpose or BACKUP

    def acquire(self, keyspace: str, shard: str) -> RepositoryLease:
        name = f"{keyspace}/{shard}"
        holder = Holder(**{**asdict(self.identity), "token": secrets.token_hex(8)})
        key = f"{keyspace}/{shard}/{self.purpose.lease_object}"
        lease = RepositoryLease(self.store, key, name, holder, self.purpose)
        lease.take(self.ttl, self.identity)
        return lease


class RepositoryLease:
    def __init__(self, store: Store, key: str, name: str, holder: Holder, purpose: Purpose) -> None:
        self.store, self.key, self.name, self.holder = store, key, name, holder
        self.purpose = purpose
        self.ttl: float | None = None
        self.version = ""
        self.acquired_at = datetime.now(UTC)
        self.valid_until = 0.0  # monotonic: when the lease runs out unless renewed
        self._lock = threading.Lock()  # the renewal thread and the committer both write

    def take(self, ttl: float, here: Holder) -> None:
        self.ttl = ttl
        started = time.monotonic()
        blob = self._record(ttl).encode()
        version = self.store.create(self.key, blob)
        if version is None:
            version = self._take_over(blob, here)
        self.version, self.valid_until = version, started + ttl

    def _take_over(self, blob: bytes, here: Holder) -> str:
        current = self.store.read_versioned(self.key)
        if current is None:  # released by deletion in between: try once more
            version = self.store.create(self.key, blob)
            if version is None:
                raise ShardBusyError(f"shard {self.name}: another run took it just now")
            return version
        data, version = current
        if data == blob:  # our own create, whose answer was lost and retried
            return version
        other = Record.decode(data)
        if other and other.expires_at > datetime.now(UTC) and not other.holder.dead_here(here):
            raise ShardBusyError(
                f"shard {self.name} {self.purpose.busy} by {other.holder.describe()} "
                f"(repository lease until {other.expires_at:%Y-%m-%d %H:%M:%S}Z); "
                f"{self.purpose.advice} (a lease whose holder died expires by itself)"
            )
        if other and not other.released:
            log.warning(
                "shard=%s taking over the lease of %s (%s)",
                self.name,
                other.holder.describe(),
                "expired" if other.expires_at <= datetime.now(UTC) else "its process is gone",
            )
        taken = self._swap(blob, version)
        if taken is None:
            raise ShardBusyError(f"shard {self.name}: another run took it just now")
        return taken

    def renew(self) -> None:
        try:
            self._extend()
        except StorageError as exc:
            if time.monotonic() >= self.valid_until:
                raise LeaseLostError(
                    f"shard {self.name}: lost its lease: it could not be renewed before it "
                    f"expired ({exc})"
                ) from None
            log.warning("shard=%s lease not renewed yet: %s", self.name, exc)

    def confirm(self) -> None:
        """A renewal that must succeed: the compare-and-swap is the fresh read and compare."""
        if time.monotonic() >= self.valid_until:
            raise LeaseLostError(f"shard {self.name}: lost its lease: it expired unrenewed")
        self._extend()

    def _extend(self) -> None:
        assert self.ttl is not None
        with self._lock:
            started = time.monotonic()
            blob = self._record(self.ttl).encode()
            version = self._swap(blob, self.version)
            if version is None:
                current = self.store.read_versioned(self.key)
                other = Record.decode(current[0]) if current else None
                who = other.holder.describe() if other else "nobody (it was removed)"
                raise LeaseLostError(f"shard {self.name}: lost its lease; it is now held by {who}")
            self.version, self.valid_until = version, started + self.ttl

    def release(self) -> None:
        """Expire the lease now, if it is still ours, so the next runner need not wait."""
        try:
            with self._lock:
                record = Record(self.holder, self.acquired_at, datetime.now(UTC), released=True)
                self._swap(record.encode(), self.version)
        except StorageError as exc:
            log.warning("shard=%s lease not released (%s); it expires by itself", self.name, exc)

    def _swap(self, blob: bytes, version: str) -> str | None:
        """Compare-and-swap; a retried request that had already landed counts as landed."""
        new = self.store.replace(self.key, blob, version)
        if new is None:
            current = self.store.read_versioned(self.key)
            if current and current[0] == blob:
                return current[1]
        return new

    def _record(self, ttl: float) -> Record:
        now = datetime.now(UTC)
        return Record(self.holder, self.acquired_at, now + timedelta(seconds=ttl))


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""  # no way to tell this boot from another: never judge a holder dead here


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _started(pid: int) -> str:
    """The start time of process `pid` (field 22 of /proc/pid/stat), "" if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]
