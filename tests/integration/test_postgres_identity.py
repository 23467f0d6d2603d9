"""A PostgreSQL shard's manifest records which cluster and timeline it came from; another
cluster behind the endpoint is refused when on_source_change says so."""

from __future__ import annotations

import pytest

from tests.integration.test_postgres import pg, pg_shard, write_config  # noqa: F401

pytestmark = pytest.mark.integration


def test_another_cluster_behind_the_endpoint_is_refused(fleet, pg) -> None:  # noqa: F811
    first_cluster = pg("pg-a", size_mb=5)
    write_config(fleet, pg_shard(first_cluster))
    [first] = fleet.backup()
    assert first.ok, first.error
    identity = fleet.repository.find("pg", "0", first.backup_id).source.identity
    assert identity and identity.startswith("system_identifier ") and "timeline 1" in identity

    other_cluster = pg("pg-b", size_mb=5)
    write_config(fleet, pg_shard(other_cluster), 'on_source_change = "refuse"')
    [refused] = fleet.backup()
    assert not refused.ok and "the source is another server" in refused.error, refused.error
    assert identity in refused.error and "catchup backup --bootstrap pg/0" in refused.error
    assert len(fleet.repository.backups()) == 1
