"""The store contract: what every store in tests/integration/stores.py's STORES
must do, on a real server each (a local directory, S3 on moto, Azure on Azurite).
The repository relies on nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from catchup.errors import ShardBusyError
from catchup.fleet.lease import RepositoryLeaser
from catchup.storage import ObjectNotFound, Store
from tests.conftest import REPO
from tests.integration.stores import PART_SIZE_MB

KEY = "ks/0/lease.json"
MB = 1 << 20


def keys(store: Store, prefix: str = "") -> list[str]:
    return sorted(obj.key for obj in store.list(prefix))


def test_put_then_get(store):
    store.put("ks/0/a", b"first")
    assert store.get("ks/0/a") == b"first"
    store.put("ks/0/a", b"second")
    assert store.get("ks/0/a") == b"second", "put overwrites"
    store.put("ks/0/empty", b"")
    assert store.get("ks/0/empty") == b""


def test_a_writer_crosses_parts_and_the_reader_returns_every_byte(store):
    data = os.urandom(2 * PART_SIZE_MB * MB + 12345)
    with store.writer("ks/0/big") as stream:
        for start in range(0, len(data), 3 * MB):
            stream.write(data[start : start + 3 * MB])
    with store.reader("ks/0/big") as stream:
        chunks = iter(lambda: stream.read(MB + 7), b"")
        assert b"".join(chunks) == data
    assert [(obj.key, obj.size) for obj in store.list("ks/")] == [("ks/0/big", len(data))]


def test_a_ranged_read_fills_the_buffer_and_is_short_at_the_end(store):
    data = os.urandom(3 * MB + 17)
    store.put("ks/0/pack", data)

    def read(start: int, length: int) -> bytes:
        buffer = memoryview(bytearray(length))
        return bytes(buffer[: store.read_range("ks/0/pack", start, buffer)])

    assert read(0, 10) == data[:10]
    assert read(MB + 5, 2 * MB) == data[MB + 5 : 3 * MB + 5]
    assert read(3 * MB, 100) == data[3 * MB :], "short at the end"
    assert read(len(data) + 10, 5) == b"", "past the end: nothing"
    with pytest.raises(ObjectNotFound):
        store.read_range("ks/0/absent", 0, memoryview(bytearray(10)))


def test_an_abandoned_writer_leaves_nothing_visible(store):
    with pytest.raises(RuntimeError, match="abandoned"), store.writer("ks/0/big") as stream:
        stream.write(os.urandom((PART_SIZE_MB + 1) * MB))  # one part may reach the server
        raise RuntimeError("abandoned")
    assert keys(store) == []
    with pytest.raises(ObjectNotFound):
        store.get("ks/0/big")


def test_missing_objects_raise_object_not_found(store):
    with pytest.raises(ObjectNotFound, match="ks/0/absent"):
        store.get("ks/0/absent")
    with pytest.raises(ObjectNotFound, match="ks/0/absent"), store.reader("ks/0/absent"):
        pass
    assert store.read_versioned("ks/0/absent") is None


def test_list_by_prefix_includes_nested_keys_and_sizes(store):
    for key in ("ks/0/a", "ks/0/sub/b", "ks/0/sub/deeper/c", "ks/01/d", "other/e"):
        store.put(key, key.encode())
    assert keys(store, "ks/0/") == ["ks/0/a", "ks/0/sub/b", "ks/0/sub/deeper/c"]
    assert keys(store, "ks/0/sub/") == ["ks/0/sub/b", "ks/0/sub/deeper/c"]
    assert keys(store, "ks/") == ["ks/0/a", "ks/0/sub/b", "ks/0/sub/deeper/c", "ks/01/d"]
    assert len(keys(store)) == 5
    assert keys(store, "nothing/") == []
    assert {obj.key: obj.size for obj in store.list("other/")} == {"other/e": len(b"other/e")}


def test_delete_removes_one_object(store):
    store.put("ks/0/a", b"a")
    store.put("ks/0/b", b"b")
    store.delete("ks/0/a")
    assert keys(store) == ["ks/0/b"]
    with pytest.raises(ObjectNotFound):
        store.get("ks/0/a")


def test_delete_prefix_removes_everything_under_it_and_nothing_else(store):
    for key in ("ks/0/a", "ks/0/sub/b", "ks/01/c", "ks/1/d"):
        store.put(key, b"x")
    store.delete_prefix("ks/0/")
    assert keys(store) == ["ks/01/c", "ks/1/d"]
    store.put("ks/0/again", b"y")  # the prefix is usable again
    assert store.get("ks/0/again") == b"y"


# A writer killed mid-object, as a crash would leave it: its own process, killed -9.
WRITE_AND_HANG = """
import json, sys, time
from catchup.config import StorageSettings
from catchup.storage import open_store
url, settings, key = sys.argv[1:]
store = open_store(url, StorageSettings(**json.loads(settings)) if settings else None)
with store.writer(key) as stream:
    stream.write(b"x" * ({size}))
    print("written", flush=True)
    time.sleep(120)
"""


def crash_mid_write(store: Store, key: str) -> None:
    settings = getattr(store, "settings", None)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITE_AND_HANG.format(size=(PART_SIZE_MB + 1) * MB),
            store.url,
            settings.model_dump_json(exclude_none=True) if settings else "",
            key,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "written\n", "the writer did not start"
    finally:
        child.kill()
        child.wait(10)


def test_a_crashed_write_is_hidden_and_delete_prefix_removes_it(store):
    store.put("ks/0/done", b"done")
    crash_mid_write(store, "ks/0/sub/crashed")
    assert keys(store) == ["ks/0/done"], "a crashed write is never listed"
    with pytest.raises(ObjectNotFound):
        store.get("ks/0/sub/crashed")
    # Only a local directory can see a crashed write; a cloud upload never completed
    # stays out of sight until the bucket's lifecycle rule expires it.
    partial = list(store.partial_writes("ks/0/"))
    assert all(key.startswith("ks/0/sub/") for key in partial), partial
    assert bool(partial) == store.url.startswith("file://")
    store.delete_prefix("ks/0/")
    assert keys(store) == []
    assert list(store.partial_writes("ks/")) == [], "delete_prefix removes partial writes too"


def test_create_only_if_absent(store):
    version = store.create(KEY, b"first")
    assert version
    assert store.create(KEY, b"second") is None
    assert store.read_versioned(KEY) == (b"first", version)
    assert store.read_versioned("ks/0/absent.json") is None


def test_replace_only_at_the_read_version(store):
    first = store.create(KEY, b"first")
    second = store.replace(KEY, b"second", first)
    assert second and second != first
    assert store.replace(KEY, b"stale", first) is None, "a write since the read wins"
    assert store.read_versioned(KEY) == (b"second", second)
    assert store.replace("ks/0/absent.json", b"x", first) is None


def test_of_racing_creators_exactly_one_wins(store):
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda i: store.create(KEY, f"runner {i}".encode()), range(8)))
    assert sum(v is not None for v in versions) == 1


def test_of_racing_replacers_exactly_one_wins(store):
    base = store.create(KEY, b"base")
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda i: store.replace(KEY, f"r{i}".encode(), base), range(8)))
    assert sum(v is not None for v in versions) == 1


def test_the_repository_lease_holds_on_the_store(store):
    lease = RepositoryLeaser(store, 60).acquire("ks", "0")
    with pytest.raises(ShardBusyError, match="repository lease"):
        RepositoryLeaser(store, 60).acquire("ks", "0")
    lease.renew()
    lease.confirm()
    lease.release()
    RepositoryLeaser(store, 60).acquire("ks", "0").confirm()
    assert [obj.key for obj in store.list("")] == [KEY], "the lease is its only object"
