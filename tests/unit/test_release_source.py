"""After the commit, the cycle tells the source to release what it held for the backup;
a failure there leaves the committed backup alone."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from catchup.cycle import release_source
from catchup.errors import SourceError

MANIFEST = SimpleNamespace(keyspace="ks", shard="0", backup_id="b1", position="0/3000148@1:slot")


class FakeSource:
    def __init__(self, fails: bool = False) -> None:
        self.released: list[str] = []
        self.fails = fails

    def release(self, position: str) -> None:
        if self.fails:
            raise SourceError("the slot could not be advanced")
        self.released.append(position)


def test_the_committed_position_is_released() -> None:
    source = FakeSource()
    release_source(source, MANIFEST)  # type: ignore[arg-type]
    assert source.released == [MANIFEST.position]


def test_a_failed_release_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="catchup.cycle"):
        release_source(FakeSource(fails=True), MANIFEST)  # type: ignore[arg-type]
    assert "b1 is committed" in caplog.text and "slot could not be advanced" in caplog.text
