"""`cycle.precheck`'s decision table, branch by branch: catch up the newest backup,
bootstrap a new chain (quietly, loudly) or refuse. Pure logic: a fake source and a
repository in a local directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from catchup.codec.keys import Keyring, generate_key_file
from catchup.cycle import CycleOptions, Plan, precheck
from catchup.engines import Coverage, Verdict
from catchup.errors import DivergedError, KeyUnavailableError, LogsPurgedError, SourceError
from catchup.repository import Repository
from catchup.repository.layout import new_backup_id
from catchup.storage.local import LocalStore
from tests.unit.test_manifest_trust import FUTURE_ID, backup, flip, plant
from tests.unit.test_repository import make_data_dir
from tests.unit.test_review_fixes import SHARD, CoveredSource, Warnings


class FakeSource(CoveredSource):
    """A source whose readiness, identity and verdict on the backup's position are given."""

    def __init__(
        self,
        coverage: Coverage = Coverage.COVERED,
        identity: str = "server 1",
        not_ready: SourceError | None = None,
    ) -> None:
        self.coverage, self.server, self.not_ready = coverage, identity, not_ready
        self.judged: list[str] = []

    def require_ready(self) -> None:
        if self.not_ready:
            raise self.not_ready

    def identity(self) -> str:
        return self.server

    def judge(self, position: str) -> Verdict:
        self.judged.append(position)
        return Verdict(self.coverage, f"the fake says {self.coverage.value}")


def decide(
    repo: Repository,
    source: FakeSource | None = None,
    on_source_change: str = "warn",
    **options: bool,
) -> tuple[Plan, list[str]]:
    warnings = Warnings()
    plan = precheck(
        repo, source or FakeSource(), SHARD, CycleOptions(**options), warnings, on_source_change
    )
    return plan, warnings.messages


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def repo(repo_dir: Path) -> Repository:
    return Repository(LocalStore(repo_dir))


def newest(repo_dir: Path, **fields: object) -> str:
    """A valid plain backup of the shard, dated now and newer than any before it (ids of
    one millisecond order by their random part), with `fields` in its manifest."""
    planted = sorted(path.name for path in (repo_dir / "ks" / "s1").glob("20*"))
    backup_id = new_backup_id()
    while planted and backup_id <= planted[-1]:
        backup_id = new_backup_id()
    plant(repo_dir, backup_id, **fields)
    return backup_id


def test_no_backup_bootstraps_quietly_without_asking_the_source(repo):
    source = FakeSource()
    assert decide(repo, source) == (Plan(None, None), [])
    assert source.judged == []


def test_force_bootstrap_starts_a_new_chain_whatever_the_source_holds(repo, repo_dir):
    newest(repo_dir)
    source = FakeSource()
    plan, warnings = decide(repo, source, force_bootstrap=True)
    assert plan == Plan(None, "a new chain was requested (--bootstrap)") and warnings == []
    assert source.judged == []


def test_a_backup_of_another_engine_is_refused_naming_both(repo, repo_dir):
    backup_id = newest(repo_dir, engine="postgres")
    with pytest.raises(SourceError, match=f"newest backup {backup_id} is a postgres backup") as e:
        decide(repo)
    assert "config says mariadb" in str(e.value) and not isinstance(e.value, DivergedError)


BRANCHES = [
    # coverage, rebootstrap, what precheck does: "catch up", "bootstrap" or an error
    (Coverage.COVERED, True, "catch up"),
    (Coverage.COVERED, False, "catch up"),
    (Coverage.COSTLY, True, "bootstrap"),
    (Coverage.COSTLY, False, "catch up"),
    (Coverage.PURGED, True, "bootstrap"),
    (Coverage.PURGED, False, LogsPurgedError),
    (Coverage.AHEAD, True, DivergedError),
    (Coverage.AHEAD, False, DivergedError),
    (Coverage.FOREIGN, True, DivergedError),
    (Coverage.FOREIGN, False, DivergedError),
]


@pytest.mark.parametrize(("coverage", "rebootstrap", "outcome"), BRANCHES)
def test_the_sources_verdict_decides(repo, repo_dir, coverage, rebootstrap, outcome):
    backup_id = newest(repo_dir)
    source = FakeSource(coverage)
    reason = f"the fake says {coverage.value}"
    if not isinstance(outcome, str):
        with pytest.raises(outcome) as raised:
            decide(repo, source, rebootstrap=rebootstrap)
        message = str(raised.value)
        assert f"newest backup {backup_id}" in message and reason in message
        assert "\n" not in message
        return
    plan, warnings = decide(repo, source, rebootstrap=rebootstrap)
    assert source.judged == ["0-1-5"], "judged at the newest backup's position"
    if outcome == "catch up":
        assert plan.parent is not None and plan.parent.backup_id == backup_id
        assert plan.rebootstrap_reason is None and warnings == []
    elif coverage is Coverage.COSTLY:
        assert plan == Plan(None, reason)
        assert warnings == [f"bootstrapping again: {reason}"]
    else:
        assert plan.parent is None
        assert plan.rebootstrap_reason == f"newest backup {backup_id} cannot be caught up: {reason}"
        assert warnings == [f"BOOTSTRAPPING AGAIN: {plan.rebootstrap_reason}"]


def test_purged_without_rebootstrap_says_how_to_go_on(repo, repo_dir):
    newest(repo_dir)
    with pytest.raises(LogsPurgedError, match="run without --no-rebootstrap"):
        decide(repo, FakeSource(Coverage.PURGED), rebootstrap=False)


def test_diverged_says_to_check_the_source_and_how_to_start_over(repo, repo_dir):
    newest(repo_dir)
    with pytest.raises(DivergedError, match="does not belong to this source") as raised:
        decide(repo, FakeSource(Coverage.FOREIGN))
    assert "catchup backup --bootstrap" in str(raised.value)


def test_a_damaged_newest_backup_is_skipped_loudly_for_the_one_before(repo, repo_dir):
    older = newest(repo_dir)
    damaged = newest(repo_dir)
    flip(repo_dir / "ks" / "s1" / damaged / "manifest.json")
    plan, [warning] = decide(repo)
    assert plan.parent is not None and plan.parent.backup_id == older
    assert warning.startswith("SKIPPING") and damaged in warning
    assert f"building on the newest intact backup {older}" in warning


def test_a_future_dated_backup_is_skipped_loudly(repo, repo_dir):
    current = newest(repo_dir)
    plant(repo_dir, FUTURE_ID)
    plan, [warning] = decide(repo)
    assert plan.parent is not None and plan.parent.backup_id == current
    assert warning.startswith("SKIPPING") and FUTURE_ID in warning


def test_when_every_backup_is_skipped_a_new_chain_is_bootstrapped_loudly(repo, repo_dir):
    damaged = newest(repo_dir)
    flip(repo_dir / "ks" / "s1" / damaged / "manifest.json")
    plant(repo_dir, FUTURE_ID)
    plan, [warning] = decide(repo)
    assert plan == Plan(None, "every earlier backup is damaged or future-dated")
    assert damaged in warning and FUTURE_ID in warning
    assert "no usable backup is left, so bootstrapping a new chain" in warning


def test_a_newest_backup_whose_key_is_unavailable_is_refused_unless_bootstrap(tmp_path):
    generate_key_file(tmp_path / "theirs.json")
    generate_key_file(tmp_path / "ours.json")
    theirs = Keyring.from_files([tmp_path / "theirs.json"])
    store = LocalStore(tmp_path / "repo")
    locked = backup(Repository(store, theirs), make_data_dir(tmp_path))
    repo = Repository(store, Keyring.from_files([tmp_path / "ours.json"]))
    with pytest.raises(KeyUnavailableError, match=f"newest backup {locked.backup_id} cannot"):
        decide(repo)
    # --bootstrap is the way out; the locked backup is still named, as passed over.
    plan, [warning] = decide(repo, force_bootstrap=True)
    assert plan.parent is None and plan.rebootstrap_reason
    assert warning.startswith("SKIPPING") and locked.backup_id in warning
    assert "not configured" in warning


IDENTIFIED = {"endpoint": "db:3306", "role": "primary", "identity": "server 1"}


def test_another_server_behind_the_endpoint_is_a_loud_warning_by_default(repo, repo_dir):
    backup_id = newest(repo_dir, source=IDENTIFIED)
    plan, [warning] = decide(repo, FakeSource(identity="server 2"))
    assert plan.parent is not None and plan.parent.backup_id == backup_id
    assert warning.startswith("SOURCE CHANGED") and "then server 1" in warning
    assert "now server 2" in warning


def test_another_server_behind_the_endpoint_is_refused_when_configured(repo, repo_dir):
    newest(repo_dir, source=IDENTIFIED)
    source = FakeSource(identity="server 2")
    with pytest.raises(DivergedError, match='on_source_change = "refuse"') as raised:
        decide(repo, source, on_source_change="refuse")
    assert "the source is another server" in str(raised.value) and source.judged == []


@pytest.mark.parametrize("identity", ["server 1", None])
def test_the_same_server_or_an_unrecorded_one_is_not_a_change(repo, repo_dir, identity):
    newest(repo_dir, source={**IDENTIFIED, "identity": identity})
    plan, warnings = decide(repo, FakeSource(identity="server 1"), on_source_change="refuse")
    assert plan.parent is not None and warnings == []


def test_a_source_that_is_not_ready_fails_before_anything_is_decided(repo, repo_dir):
    newest(repo_dir)
    source = FakeSource(not_ready=SourceError("shard ks/s1: the catchup account lacks X"))
    with pytest.raises(SourceError, match="lacks X"):
        decide(repo, source)
    assert source.judged == []
