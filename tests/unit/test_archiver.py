"""The archiver's loop (fleet/archiver.py) as pure logic: a stand-in log stream whose
spool files the test writes, a local store that fails on demand. Engines stream real
servers in tests/integration; here: what is uploaded, when, and after failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from catchup.codec import CodecSettings
from catchup.config import parse_config
from catchup.engines import LogMark
from catchup.fleet.archiver import Archiver, ArchiverStatus
from catchup.repository import Repository
from catchup.repository.archive import Mark
from catchup.storage import StorageError
from catchup.storage.local import LocalStore

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


class Spool:
    """A log stream: files the test appends to; positions are byte totals."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names: list[str] = []
        self.forgotten: list[str] = []

    @property
    def start(self) -> str:
        return "0"

    def write(self, name: str, data: bytes) -> None:
        if name not in self.names:
            self.names.append(name)
        with open(self.root / name, "ab") as spool:
            spool.write(data)

    def poll(self) -> list[tuple[str, int]]:
        return [(name, (self.root / name).stat().st_size) for name in self.names]

    def path(self, name: str) -> Path:
        return self.root / name

    def mark(self, name: str, length: int) -> LogMark:
        before = sum((self.root / n).stat().st_size for n in self.names[: self.names.index(name)])
        total = before + length
        return LogMark(str(total), T0 + timedelta(seconds=total))

    def forget(self, name: str) -> None:
        self.forgotten.append(name)


class FlakyStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failures = 0

    def writer(self, key: str):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise StorageError(f"injected: cannot write {key}")
        return super().writer(key)


@pytest.fixture
def setup(tmp_path):
    store = FlakyStore(tmp_path / "repo")
    repository = Repository(store)
    config = parse_config(
        {
            "repository": str(tmp_path / "repo"),
            "work_dir": str(tmp_path / "work"),
            "shards": [{"keyspace": "ks", "shard": "0", "source": "db:3306"}],
        }
    )
    spool = Spool(tmp_path)
    archiver = Archiver(config, config.shards[0], repository, ArchiverStatus("ks/0"), engine=None)  # type: ignore[arg-type]
    index = repository.archive_index("ks", "0")
    writer = repository.archive_writer(index, "s1", "src", CodecSettings(1))
    return store, repository, spool, archiver, writer


def test_each_flush_stores_only_what_is_new_and_forgets_finished_files(setup):
    _store, repository, spool, archiver, writer = setup
    spool.write("log.1", b"a" * 100)
    last = archiver.flush(spool, writer, Mark(position="0"))
    assert last.position == "100"
    assert archiver.flush(spool, writer, last) == last  # nothing new: nothing stored
    spool.write("log.1", b"b" * 50)
    spool.write("log.2", b"c" * 10)
    last = archiver.flush(spool, writer, last)
    index = repository.archive_index("ks", "0")
    assert [(r.file, r.offset, r.size) for r in index.records] == [
        ("log.1", 0, 100),
        ("log.1", 100, 50),
        ("log.2", 0, 10),
    ]
    assert last.position == "160" and index.end == last
    assert spool.forgotten == ["log.1"]  # archived, and the tool writes a later file
    status = archiver.status
    assert status.archived_bytes == 160 and status.pending_bytes == 0
    assert status.newest_commit == T0 + timedelta(seconds=160)


def test_a_failing_store_loses_nothing_and_shows_the_archive_behind(setup):
    store, repository, spool, archiver, writer = setup
    spool.write("log.1", b"a" * 100)
    last = archiver.flush(spool, writer, Mark(position="0"))
    spool.write("log.1", b"b" * 40)
    store.failures = 2
    for _ in range(2):
        with pytest.raises(StorageError):
            archiver.flush(spool, writer, last)
    status = archiver.status
    assert status.pending_bytes == 40
    # The lag counts from the newest archived commit while bytes wait.
    assert status.lag_seconds(T0 + timedelta(seconds=130)) == 30
    spool.write("log.1", b"c" * 10)
    last = archiver.flush(spool, writer, last)  # the store is back: all of it, once
    index = repository.archive_index("ks", "0")
    assert not index.problems
    assert [(r.offset, r.size) for r in index.records] == [(0, 100), (100, 50)]
    assert last.position == "150" and status.pending_bytes == 0
    assert status.lag_seconds() == 0
