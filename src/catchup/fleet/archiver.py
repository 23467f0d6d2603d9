"""The log archiver of one shard: the source's log into the repository, as it is written.

    lock → read the index → stream from its end (or record a gap) →
    every flush_seconds: upload what is new in each spool file → …

The engine's own tool (mariadb-binlog, pg_receivewal) writes the log into a
private spool directory; this loop uploads the settled bytes past what the
archive holds, as pieces with their end position and commit time (see
repository/archive/). It never uploads a byte twice and never skips one: after
kill -9 the next run reads the index and asks the engine to stream from its
end. A store that fails is retried at the next tick, the spool keeps the bytes
meanwhile and the lag grows, which the metrics show. `supervise` restarts a
stopped archiver with backoff, for `catchup archive` and `catchup serve`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from catchup.cancel import CancelToken
from catchup.codec import CodecSettings
from catchup.config import Config, Shard
from catchup.engines import Engine, LogStream
from catchup.engines.registry import engine_for
from catchup.engines.workdir import instance_dir
from catchup.errors import Cancelled, CatchupError, ShardBusyError
from catchup.fleet.lease import ARCHIVE
from catchup.fleet.lock import shard_lock
from catchup.pitr import at_or_before
from catchup.repository import Repository
from catchup.repository.archive import ArchiveConflictError, ArchiveWriter, Mark
from catchup.repository.layout import new_backup_id
from catchup.storage import StorageError

log = logging.getLogger("catchup.archive")
WINDOW_REFRESH_SECONDS = 600.0


@dataclass
class ArchiverStatus:
    """What an archiver is doing, for the status page, the API and the metrics."""

    shard: str
    state: str = "starting"  # starting, streaming, behind, waiting, stopped
    position: str = ""  # the end of the archive
    newest_commit: datetime | None = None  # commit time of the newest archived transaction
    window_from: datetime | None = None  # the oldest backup a restore can roll forward from
    last_flush: datetime | None = None  # the last time everything settled was stored
    pending_bytes: int = 0  # settled in the spool, not yet stored
    archived_bytes: int = 0  # stored by this process
    pieces: int = 0
    gaps: int = 0
    restarts: int = 0
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def lag_seconds(self, now: datetime | None = None) -> float:
        """Now minus the newest archived commit while anything waits to be stored; 0 when
        the archive holds everything the source sent."""
        if not self.pending_bytes or self.newest_commit is None:
            return 0.0
        return max(0.0, ((now or datetime.now(UTC)) - self.newest_commit).total_seconds())

    def summary(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "state": self.state,
            "position": self.position,
            "newest_commit": self.newest_commit.isoformat() if self.newest_commit else None,
            "window_from": self.window_from.isoformat() if self.window_from else None,
            "last_flush": self.last_flush.isoformat() if self.last_flush else None,
            "lag_seconds": round(self.lag_seconds(), 3),
            "pending_bytes": self.pending_bytes,
            "archived_bytes": self.archived_bytes,
            "gaps": self.gaps,
            "restarts": self.restarts,
            "error": self.error,
        }


class Archiver:
    def __init__(
        self,
        config: Config,
        shard: Shard,
        repository: Repository,
        status: ArchiverStatus | None = None,
        engine: Engine[Any] | None = None,
    ) -> None:
        self.config, self.shard, self.repository = config, shard, repository
        self.engine = engine or engine_for(shard.engine)
        self.status = status or ArchiverStatus(shard.name)
        self.codec = CodecSettings(config.compression.level, config.compression.threads)
        self.stretch = ""  # where the archive's current stretch (no gap since) begins

    def run(self, cancel: CancelToken) -> None:
        """Archive until cancelled; raise when the stream or the lease is lost."""
        shard = self.shard
        with shard_lock(
            self.config.work_dir,
            self.repository.store,
            shard.keyspace,
            shard.shard,
            self.config.lock.lease_seconds,
            cancel,
            ARCHIVE,
        ) as held:
            index = self.repository.archive_index(shard.keyspace, shard.shard)
            for problem in index.problems:
                log.warning("shard=%s archive: %s", shard.name, problem)
            with self.engine.open_source(self.config, shard) as source:
                identity = source.identity()
            writer = self.repository.archive_writer(index, new_backup_id(), identity, self.codec)
            end = index.end
            # A new archive starts at the newest backup, if the source still has the log
            # from there: point-in-time restores work from that backup on, not from the next.
            newest = None if end else self.repository.latest(shard.keyspace, shard.shard)
            resume = end.position if end else newest.position if newest else None
            # A fresh spool: the engine streams from the archive's end, not from leftovers.
            spool_label = f"archive-{shard.keyspace}.{shard.shard}"
            with (
                instance_dir(self.config.work_dir, spool_label) as spool,
                self.engine.stream_log(self.config, shard, spool, resume) as stream,
            ):
                start = Mark(position=stream.start)
                stretch = index.runs()[-1].start.position if index.records else stream.start
                if (
                    end is not None
                    and self.engine.compare_positions(stream.start, end.position) != 0
                ):
                    self._gap(writer, end, start)
                    stretch = stream.start
                self.stretch = stretch
                self._set(state="streaming", position=stream.start, error=None)
                self._stream(stream, writer, end or start, held.cancel)

    def _gap(self, writer: ArchiveWriter, end: Mark, start: Mark) -> None:
        reason = (
            f"the source could not send the log from {end.position} (purged, or another "
            f"history); the archive resumes at {start.position}"
        )
        log.error("shard=%s archive gap: %s", self.shard.name, reason)
        writer.gap(end, start, reason)
        with self.status.lock:
            self.status.gaps += 1

    def _note_window(self) -> None:
        """When the restorable window begins: the oldest backup inside the archive's
        current stretch (refreshed now and then: new backups and prunes move it)."""
        shard = self.shard
        backups = self.repository.backups(shard.keyspace, shard.shard)
        inside = [m for m in backups if at_or_before(self.engine, self.stretch, m.position)]
        self._set(window_from=inside[0].created_at if inside else None)

    def _stream(
        self, stream: LogStream, writer: ArchiveWriter, last: Mark, cancel: CancelToken
    ) -> None:
        interval = self.config.archive.flush_seconds
        noted = 0.0
        while True:
            started = time.monotonic()
            every = WINDOW_REFRESH_SECONDS if self.status.window_from else interval * 6
            if started - noted > every:
                with contextlib.suppress(CatchupError):  # only the status page's line
                    self._note_window()
                noted = started
            try:
                last = self.flush(stream, writer, last)
            except StorageError as exc:  # the spool keeps the bytes: retry at the next tick
                log.warning("shard=%s archive upload failed, retrying: %s", self.shard.name, exc)
                self._set(state="behind", error=str(exc))
            cancel.sleep(max(0.0, interval - (time.monotonic() - started)))
            cancel.check()

    def flush(self, stream: LogStream, writer: ArchiveWriter, last: Mark) -> Mark:
        """Store what is new in every spool file; returns the archive's new end."""
        files = stream.poll()
        pending = sum(max(0, length - writer.lengths.get(name, 0)) for name, length in files)
        self._set(pending_bytes=pending)
        for name, length in files:
            done = writer.lengths.get(name, 0)
            if length <= done:
                continue
            with open(stream.path(name), "rb") as spooled:
                spooled.seek(done)
                data = spooled.read(length - done)
            mark = stream.mark(name, done + len(data))
            end = Mark(position=mark.position or last.position, time=mark.time or last.time)
            writer.append(name, done, data, last, end)
            last = end
            pending -= len(data)
            with self.status.lock:
                self.status.archived_bytes += len(data)
                self.status.pieces += 1
                self.status.pending_bytes = max(0, pending)
                self.status.position = end.position
                self.status.newest_commit = end.time or self.status.newest_commit
        for name, length in files[:-1]:
            if writer.lengths.get(name, 0) >= length:
                stream.forget(name)
        self._set(state="streaming", last_flush=datetime.now(UTC), pending_bytes=0, error=None)
        return last

    def _set(self, **fields: Any) -> None:
        with self.status.lock:
            for name, value in fields.items():
                setattr(self.status, name, value)


def supervise(
    config: Config,
    shard: Shard,
    repository: Repository,
    cancel: CancelToken,
    status: ArchiverStatus | None = None,
    once: bool = False,
) -> None:
    """Run the shard's archiver until cancelled, restarting it after any failure with
    backoff (1 s doubling to archive.restart_max_seconds). A lease held elsewhere is
    waited for: that archiver may stop, and this one then takes over. `once`: return
    at the first failure instead."""
    status = status or ArchiverStatus(shard.name)
    delay = 1.0
    while not cancel.cancelled:
        started = time.monotonic()
        try:
            Archiver(config, shard, repository, status).run(cancel)
        except Cancelled:
            break
        except ShardBusyError as exc:
            status.state, status.error = "waiting", str(exc)
        except (CatchupError, ArchiveConflictError) as exc:
            log.error("shard=%s archiver stopped: %s", shard.name, exc)
            status.state, status.error = "stopped", str(exc)
        except Exception as exc:  # a bug must not end the daemon's archiving for good
            log.exception("shard=%s archiver failed", shard.name)
            status.state, status.error = "stopped", f"{type(exc).__name__}: {exc}"
        if once:
            return
        if time.monotonic() - started > 10 * delay:
            delay = 1.0  # it ran a good while: this is a new failure, not the same one
        status.restarts += 1
        if cancel.cancelled:
            break
        with contextlib.suppress(Cancelled):
            cancel.sleep(delay)
        delay = min(delay * 2, config.archive.restart_max_seconds)
    status.state = "stopped"
