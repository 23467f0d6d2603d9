"""Replica server ids: unique across work dirs (hosts, pods), never one the source knows."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from catchup.config import MariaDBSettings
from catchup.engines.mariadb import instance as instance_module
from catchup.engines.mariadb.instance import SERVER_ID_RANGE, provision, random_server_id
from catchup.errors import InstanceError


def test_instances_in_separate_work_dirs_get_different_server_ids(tmp_path: Path) -> None:
    # Each pod or host has a work dir of its own: nothing on disk can coordinate them.
    with ExitStack() as stack:
        ids = [
            stack.enter_context(
                provision(tmp_path / f"host-{n}", "ks.0", MariaDBSettings())
            ).server.server_id
            for n in range(20)
        ]
    assert len(set(ids)) == len(ids)
    assert all(SERVER_ID_RANGE[0] <= i <= SERVER_ID_RANGE[1] for i in ids)


class Draws:
    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def randint(self, low: int, high: int) -> int:
        return self.values.pop(0)


def test_a_server_id_the_source_knows_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instance_module, "RANDOM", Draws(3_000_000_000, 3_000_000_007))
    assert random_server_id({3_000_000_000}) == 3_000_000_007


def test_no_free_server_id_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instance_module, "RANDOM", Draws(*[5] * instance_module.DRAWS))
    with pytest.raises(InstanceError, match="no free server id"):
        random_server_id({5})
