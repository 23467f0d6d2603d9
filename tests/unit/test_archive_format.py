"""The log archive's records and pieces on a local store: round trip, tampering, gaps.

Positions here are decimal numbers (a stand-in engine: pure logic); the engines'
own positions are tested with real servers in tests/integration.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import pytest

from catchup.codec import CodecSettings
from catchup.codec.keys import Keyring, generate_key_file
from catchup.errors import ArchiveGapError
from catchup.repository import Repository
from catchup.repository.archive import (
    ArchiveConflictError,
    ArchiveIndex,
    Mark,
    pieces_for_replay,
)
from catchup.storage.local import LocalStore

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def compare(a: str, b: str) -> int | None:
    if a.startswith("other") != b.startswith("other"):
        return None
    x, y = int(a.removeprefix("other")), int(b.removeprefix("other"))
    return (x > y) - (x < y)


def mark(n: int) -> Mark:
    return Mark(position=str(n), time=T0 + timedelta(seconds=n))


def repository(root: Path, encrypted: bool = True) -> Repository:
    root.mkdir(parents=True, exist_ok=True)
    keyring = Keyring((generate_key_file(root / "key"),)) if encrypted else Keyring()
    return Repository(LocalStore(root / "repo"), keyring)


def archive(repo: Repository, pieces: list[tuple[str, bytes]], session: str = "s1") -> None:
    """Append pieces of files; each piece ends a transaction at position = total bytes."""
    index = repo.archive_index("ks", "0")
    writer = repo.archive_writer(index, session, "src-1", CodecSettings(1))
    last = index.end or mark(0)
    total = int(last.position)
    for name, data in pieces:
        total += len(data)
        end = mark(total)
        writer.append(name, writer.lengths.get(name, 0), data, last, end)
        last = end


def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo" / "ks" / "0" / "archive" / "index"


def test_pieces_round_trip_into_whole_files(tmp_path):
    repo = repository(tmp_path)
    archive(repo, [("log.1", b"a" * 10), ("log.1", b"b" * 5), ("log.2", b"c" * 7)])
    archive(repo, [("log.2", b"d" * 3)], session="s2")  # a second archiver run continues
    index = repo.archive_index("ks", "0")
    assert not index.problems
    assert [r.seq for r in index.records] == [0, 1, 2, 3]
    assert index.end is not None and index.end.position == "25"
    assert len(index.runs()) == 1
    records = pieces_for_replay(index, compare, "12", lambda end: int(end.position) >= 25)
    names = repo.restore_log(index, records, tmp_path / "logs", jobs=2)
    assert names == ["log.1", "log.2"]
    assert (tmp_path / "logs" / "log.1").read_bytes() == b"a" * 10 + b"b" * 5
    assert (tmp_path / "logs" / "log.2").read_bytes() == b"c" * 7 + b"d" * 3
    assert os.stat(tmp_path / "logs" / "log.1").st_mode & 0o777 == 0o600
    # Pieces are stored encrypted: no plaintext run of the log in any object.
    for piece in (tmp_path / "repo" / "ks" / "0" / "archive" / "pieces").iterdir():
        assert b"aaaaaaaa" not in piece.read_bytes()


def test_replay_takes_whole_files_up_to_the_target_only(tmp_path):
    repo = repository(tmp_path, encrypted=False)
    archive(repo, [("log.1", b"a" * 10), ("log.2", b"b" * 10), ("log.3", b"c" * 10)])
    index = repo.archive_index("ks", "0")
    # From 15 (inside log.2) to 20: log.2 from its first byte; log.1 and log.3 not needed.
    records = pieces_for_replay(index, compare, "15", lambda end: int(end.position) >= 20)
    assert [r.file for r in records] == ["log.2"]
    with pytest.raises(ArchiveGapError, match=r"ends before the target.*30"):
        pieces_for_replay(index, compare, "15", lambda end: int(end.position) >= 31)
    with pytest.raises(ArchiveGapError, match="does not hold the log from position other5"):
        pieces_for_replay(index, compare, "other5", lambda end: True)


def test_a_gap_splits_the_window_and_no_replay_crosses_it(tmp_path):
    repo = repository(tmp_path)
    archive(repo, [("log.1", b"a" * 10)])
    index = repo.archive_index("ks", "0")
    writer = repo.archive_writer(index, "s2", "src-1", CodecSettings(1))
    writer.gap(mark(10), mark(50), "the source purged its binlogs")
    writer.append("log.5", 0, b"e" * 10, mark(50), mark(60))
    index = repo.archive_index("ks", "0")
    assert [run.describe()[:8] for run in index.runs()] == ["0 (2026-", "50 (2026"]
    assert len(index.gaps()) == 1 and "purged" in index.gaps()[0].reason
    with pytest.raises(ArchiveGapError, match=r"covers 0 .* to 10"):
        pieces_for_replay(index, compare, "5", lambda end: int(end.position) >= 55)
    assert [r.file for r in pieces_for_replay(index, compare, "50", lambda e: True)] == ["log.5"]


@pytest.mark.parametrize("damage", ["altered", "deleted", "swapped", "planted plain", "moved"])
def test_tampering_with_the_index_is_found_and_named(tmp_path, damage):
    repo = repository(tmp_path)
    archive(repo, [(f"log.{n}", bytes([65 + n]) * 4) for n in range(5)])
    records = sorted(index_dir(tmp_path).iterdir())
    victim = records[2]
    if damage == "altered":
        document = json.loads(victim.read_bytes())
        sealed = bytearray(document["sealed_index"].encode())
        sealed[20] = ord("A") if sealed[20] != ord("A") else ord("B")
        document["sealed_index"] = sealed.decode()
        victim.write_text(json.dumps(document))
        expected = "000000000002.json.*(altered|unreadable)"
    elif damage == "deleted":
        victim.unlink()
        expected = "records 2 of ks/0 are missing"
    elif damage == "swapped":
        a, b = victim.read_bytes(), records[3].read_bytes()
        victim.write_bytes(b)
        records[3].write_bytes(a)
        expected = "000000000002.json: failed authentication"
    elif damage == "planted plain":
        plain = repository(tmp_path / "plain", encrypted=False)
        archive(plain, [(f"log.{n}", b"x" * 4) for n in range(3)])
        planted = sorted(index_dir(tmp_path / "plain").iterdir())[2]
        victim.write_bytes(planted.read_bytes())
        expected = "000000000002.json is not encrypted although encryption is configured"
    else:  # a record copied from another sequence number
        victim.write_bytes(records[1].read_bytes())
        expected = "000000000002.json: failed authentication"
    index = repo.archive_index("ks", "0")
    assert any(__import__("re").search(expected, p) for p in index.problems), index.problems
    # No replay crosses the damage: the runs split there.
    assert all(not (r.records[0].seq < 2 < r.records[-1].seq) for r in index.runs())
    with pytest.raises(ArchiveGapError):
        pieces_for_replay(index, compare, "2", lambda end: int(end.position) >= 20)


def test_an_altered_piece_is_refused_by_its_hash(tmp_path):
    repo = repository(tmp_path, encrypted=False)
    archive(repo, [("log.1", b"a" * 100)])
    [piece] = (tmp_path / "repo" / "ks" / "0" / "archive" / "pieces").iterdir()
    replacement = repository(tmp_path / "other", encrypted=False)
    archive(replacement, [("log.1", b"b" * 100)])
    [other] = (tmp_path / "other" / "repo" / "ks" / "0" / "archive" / "pieces").iterdir()
    piece.write_bytes(other.read_bytes())
    index = repo.archive_index("ks", "0")
    records = pieces_for_replay(index, compare, "0", lambda end: True)
    with pytest.raises(Exception, match="does not match its manifest hash"):
        repo.restore_log(index, records, tmp_path / "logs", jobs=1)


def test_a_second_writer_on_the_same_index_is_refused(tmp_path):
    repo = repository(tmp_path)
    index: ArchiveIndex = repo.archive_index("ks", "0")
    first = repo.archive_writer(index, "s1", "src", CodecSettings(1))
    second = repo.archive_writer(index, "s2", "src", CodecSettings(1))
    first.append("log.1", 0, b"a", mark(0), mark(1))
    with pytest.raises(ArchiveConflictError, match="another archiver"):
        second.append("log.1", 0, b"b", mark(0), mark(1))
    assert [r.session for r in repo.archive_index("ks", "0").records] == ["s1"]


def test_prune_takes_whole_files_before_the_oldest_kept_backup_and_never_the_last(tmp_path):
    from catchup.repository.archive import delete_records, expired_records

    repo = repository(tmp_path, encrypted=False)
    archive(repo, [("log.1", b"a" * 10), ("log.1", b"a" * 10), ("log.2", b"b" * 10)])
    archive(repo, [("log.2", b"b" * 10), ("log.3", b"c" * 10)])
    index = repo.archive_index("ks", "0")
    # Kept backup at 25 (inside log.2): log.1 goes whole, log.2 stays whole.
    assert [r.seq for r in expired_records(index, compare, "25")] == [0, 1]
    # At 20 exactly (log.1's end) the same; at 15 (inside log.1) nothing.
    assert [r.seq for r in expired_records(index, compare, "20")] == [0, 1]
    assert expired_records(index, compare, "15") == []
    # Far ahead: everything but the last record, which the archiver resumes after.
    assert [r.seq for r in expired_records(index, compare, "99")] == [0, 1, 2, 3]
    delete_records(repo.store, index, expired_records(index, compare, "25"))
    after = repo.archive_index("ks", "0")
    assert not after.problems and [r.seq for r in after.records] == [2, 3, 4]
    records = pieces_for_replay(after, compare, "25", lambda end: int(end.position) >= 50)
    assert [r.file for r in records] == ["log.2", "log.2", "log.3"]
    assert not list((tmp_path / "repo" / "ks" / "0" / "archive" / "pieces").glob("*000[01].*"))


def test_a_cycle_takes_what_the_archive_holds_after_its_parent(tmp_path):
    repo = repository(tmp_path, encrypted=False)
    archive(repo, [("log.1", b"a" * 10), ("log.2", b"b" * 10)])
    index = repo.archive_index("ks", "0")
    assert [r.file for r in pieces_for_replay(index, compare, "12")] == ["log.2"]
    assert pieces_for_replay(index, compare, "20") == []  # nothing after it yet
    assert pieces_for_replay(index, compare, "other3") == []  # another history: none


def batched(repo: Repository, count: int, batch: int = 3) -> None:
    index = repo.archive_index("ks", "0")
    writer = repo.archive_writer(index, "s1", "src-1", CodecSettings(1))
    writer.batch_size = batch
    last = mark(0)
    for n in range(count):
        end = mark(10 * (n + 1))
        writer.append(f"log.{n // 2}", writer.lengths.get(f"log.{n // 2}", 0), b"x" * 10, last, end)
        last = end


def test_records_are_gathered_into_batches_that_read_back_the_same(tmp_path):
    repo = repository(tmp_path)
    batched(repo, 7)
    names = sorted(p.name for p in index_dir(tmp_path).iterdir())
    assert names == [
        "000000000000-000000000002.json",
        "000000000003-000000000005.json",
        "000000000006.json",
    ]
    index = repo.archive_index("ks", "0")
    assert not index.problems and [r.seq for r in index.records] == list(range(7))
    records = pieces_for_replay(index, compare, "0", lambda end: int(end.position) >= 70)
    repo.restore_log(index, records, tmp_path / "logs", jobs=2)  # every piece's key found
    assert (tmp_path / "logs" / "log.3").read_bytes() == b"x" * 10
    # A second session continues the chain and the numbering.
    batched(repo, 0)
    archive(repo, [("log.9", b"y" * 5)], session="s2")
    assert [r.seq for r in repo.archive_index("ks", "0").records][-1] == 7


def test_a_tampered_or_deleted_batch_is_named_and_prune_keeps_partly_needed_batches(tmp_path):
    from catchup.repository.archive import delete_records, expired_records

    repo = repository(tmp_path)
    batched(repo, 7)
    batch = index_dir(tmp_path) / "000000000003-000000000005.json"
    saved = batch.read_bytes()
    batch.write_bytes(saved.replace(b'"sealed_index": "', b'"sealed_index": "AAAA'))
    index = repo.archive_index("ks", "0")
    assert any("000000000003-000000000005.json" in p for p in index.problems), index.problems
    batch.unlink()
    index = repo.archive_index("ks", "0")
    assert any("records 3-5 of ks/0 are missing" in p for p in index.problems), index.problems
    batch.write_bytes(saved)
    index = repo.archive_index("ks", "0")
    # Kept backup at 40 (record 3): batch 0-2 goes, batch 3-5 stays whole.
    delete_records(repo.store, index, expired_records(index, compare, "40"))
    after = repo.archive_index("ks", "0")
    assert not after.problems and [r.seq for r in after.records] == [3, 4, 5, 6]


def test_a_batch_left_beside_its_singles_reads_once_and_the_next_writer_cleans_up(tmp_path):
    repo = repository(tmp_path)
    index = repo.archive_index("ks", "0")
    writer = repo.archive_writer(index, "s1", "src-1", CodecSettings(1))
    writer.batch_size = 3
    writer._delete_singles = lambda seqs: None  # a crash right after the batch's create
    last = mark(0)
    for n in range(4):
        end = mark(10 * (n + 1))
        writer.append(f"log.{n}", 0, b"z" * 10, last, end)
        last = end
    index = repo.archive_index("ks", "0")
    assert index.stale == [0, 1, 2] and [r.seq for r in index.records] == [0, 1, 2, 3]
    assert not index.problems
    repo.archive_writer(index, "s2", "src-1", CodecSettings(1))
    assert sorted(p.name for p in index_dir(tmp_path).iterdir()) == [
        "000000000000-000000000002.json",
        "000000000003.json",
    ]


def test_prune_removes_the_archive_before_the_oldest_kept_backup_and_pitr_days_keeps_more(
    tmp_path,
):
    from datetime import timedelta as days_delta

    from catchup.fleet.prune import prune
    from catchup.repository.manifest import BackupHeader
    from tests.unit.test_repository import header, make_data_dir

    repo = repository(tmp_path, encrypted=False)
    data = make_data_dir(tmp_path)
    now = datetime.now(UTC)
    # Three backups, 30, 20 and 10 days old, at GTIDs 0-1-10, 0-1-20, 0-1-30.
    for age, seqno in ((30, 10), (20, 20), (10, 30)):
        fields = {**dict(header()), "position": f"0-1-{seqno}"}
        with patch.object(repo, "now", return_value=now - days_delta(days=age)):
            repo.write_backup(
                BackupHeader(**fields),
                data,
                repo.scan(data, lambda rel: False),
                CodecSettings(1),
                jobs=2,
            )
    # The archive: a file per ten transactions, 0-1-0 to 0-1-40.
    index = repo.archive_index("ks", "0")
    writer = repo.archive_writer(index, "s1", "src", CodecSettings(1))
    for n in range(4):
        start, end = Mark(position=f"0-1-{10 * n}"), Mark(position=f"0-1-{10 * n + 10}")
        writer.append(f"bin.{n}", 0, b"x" * 10, start, end)

    def kept_files() -> list[str]:
        return sorted({r.file for r in repo.archive_index("ks", "0").records})

    work = tmp_path / "work"
    # Keep 2 backups: the oldest kept is at 0-1-20, so bin.0 and bin.1 (up to 0-1-20) go.
    # pitr_days 25: the 30-day-old backup (0-1-10) is the base of a restore to 25 days ago
    # and stays; the log before it (bin.0) goes.
    pitr = prune(repo, work, 2, days_delta(0), False, pitr=days_delta(25))
    assert [r["id"] for r in pitr.removed] == ["archive records 0-0"], pitr.removed
    assert kept_files() == ["bin.1", "bin.2", "bin.3"]
    # Without it, retention keeps two backups: the oldest kept is at 0-1-20.
    result = prune(repo, work, 2, days_delta(0), False)
    assert result.removed[0]["reason"] == "expired"
    assert result.removed[-1]["id"] == "archive records 1-1", result.removed
    assert kept_files() == ["bin.2", "bin.3"]
    assert not repo.archive_index("ks", "0").problems
