"""One set of lifecycle tests, run unchanged against both executors: `local`
(cycles in this process) and `kubernetes` (Jobs on a small fake cluster whose
kubelet runs each pod's container command as a local process). Both run real
cycles against a real sandbox MariaDB source.

Covered: a cycle to success, a failure retried until the retries are spent, a
cycle stopped at its deadline, a shard that is busy elsewhere, two cycles of one
shard started at once, a lock left by a runner that died, a cancelled cycle;
and after each, nothing left behind (no Job, pod, Lease, server or instance
dir) and no backup that should not exist.
"""

from __future__ import annotations

import secrets
import shutil
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

import pytest
from kubernetes import client

from catchup.cancel import CancelToken
from catchup.config import Config, parse_config
from catchup.daemon.executors import Executor
from catchup.daemon.executors.kubernetes.executor import KubernetesExecutor
from catchup.daemon.executors.kubernetes.job import SECRETS_DIR, UID, WORK_DIR, labels, shard_lease
from catchup.daemon.executors.local import LocalExecutor
from catchup.daemon.metrics import exposition
from catchup.daemon.service import Daemon
from catchup.fleet.lock import shard_lock
from catchup.fleet.run import ShardResult
from catchup.repository import open_repository
from tests.integration.conftest import Fleet, mariadbd_processes_under
from tests.integration.fakekube import FakeCluster

OTHER_JOB = "catchup-commerce-0-other"  # a Job of the same shard started by someone else


class Steps:
    """A reporter that records steps and can act when one begins."""

    def __init__(self, on_step: Callable[[str], None] | None = None) -> None:
        self.seen: list[str] = []
        self.on_step = on_step

    def step(self, shard: str, step: str) -> None:
        self.seen.append(step)
        if self.on_step:
            self.on_step(step)

    def progress(self, shard: str, done: int, total: int) -> None:
        pass

    def warn(self, shard: str, message: str) -> None:
        pass


@dataclass
class Harness:
    kind: str
    fleet: Fleet
    cluster: FakeCluster | None = None
    settings: dict[str, float] = field(default_factory=dict)

    def config_text(self, pod_paths: bool) -> str:
        source = self.fleet.sources[0]
        password = f"{SECRETS_DIR}/commerce-0.password" if pod_paths else str(source.password_file)
        work = f"{WORK_DIR}/work" if pod_paths else str(self.fleet.root / "work")
        executor = "\n".join(f"{k} = {v}" for k, v in self.settings.items())
        return (
            f'repository = "{self.fleet.root / "repository"}"\nwork_dir = "{work}"\n'
            "stall_timeout_seconds = 20\n"
            f'[executor]\nkind = "{self.kind}"\nretry_delay_seconds = 0.2\n{executor}\n'
            '[kubernetes]\nnamespace = "catchup"\nimage = "catchup:test"\nwatch_seconds = 1\n'
            f'[[shards]]\nkeyspace = "commerce"\nshard = "0"\nsource = "{source.endpoint}"\n'
            f'credentials = {{ user = "catchup", password_file = "{password}" }}\n'
        )

    @property
    def config(self) -> Config:
        return parse_config(tomllib.loads(self.config_text(pod_paths=self.cluster is not None)))

    def executor(self) -> Executor:
        config = self.config
        repository = open_repository(config)
        if self.cluster is None:
            return LocalExecutor(config, repository)
        # The ConfigMap holds the very config the daemon runs with.
        self.cluster.config_maps["catchup-config"] = {"catchup.toml": self.config_text(True)}
        self.cluster.secrets["catchup-secrets"] = {
            "commerce-0.password": self.fleet.sources[0].password_file.read_text()
        }
        api = client.ApiClient(client.Configuration(host=self.cluster.url))
        return KubernetesExecutor(config, repository, api)

    def run(self, reporter: Steps | None = None, cancel: CancelToken | None = None) -> ShardResult:
        shard = self.config.shards[0]
        run_id = f"run-{secrets.token_hex(6)}"
        return self.executor().execute(
            shard, run_id, False, reporter or Steps(), cancel or CancelToken()
        )

    def occupy(self) -> AbstractContextManager[object]:
        """Make the shard busy the way another runner would."""
        shard = self.config.shards[0]
        if self.cluster is None:
            store = open_repository(self.config).store
            return shard_lock(self.config.work_dir, store, shard.keyspace, shard.shard, 60)
        cluster = self.cluster

        @contextmanager
        def active_job() -> Iterator[None]:
            cluster.add_active_job(OTHER_JOB, labels(shard, "run-other"))
            yield
            cluster.delete_job(OTHER_JOB, None)

        return active_job()

    def leave_stale_lock(self) -> None:
        """What a runner killed mid-cycle leaves: a lock whose holder is gone."""
        shard = self.config.shards[0]
        if self.cluster is None:  # a lock file with a dead pid, no flock held
            locks = self.config.work_dir / "locks"
            locks.mkdir(parents=True, exist_ok=True)
            (locks / f"{shard.keyspace}.{shard.shard}.lock").write_text("999999")
            return
        lease = client.ApiClient().sanitize_for_serialization(
            shard_lease(shard, "catchup-commerce-0-gone-job")
        )
        lease["spec"]["acquireTime"] = "2026-01-01T00:00:00.000000Z"
        self.cluster.store_lease(lease)

    def leftovers(self) -> list[str]:
        ephemeral = self.cluster.root if self.cluster else self.fleet.root / "work"
        found = [f"mariadbd {pid}" for pid in mariadbd_processes_under(ephemeral)]
        if self.cluster is None:
            return found + [f"instance dir {p.name}" for p in self.fleet.instance_dirs()]
        return (
            found
            + [f"job {name}" for name in self.cluster.jobs]
            + [f"pod {name}" for name in self.cluster.pods]
        )

    def wait_clean(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.leftovers():
            assert time.monotonic() < deadline, f"left behind: {self.leftovers()}"
            time.sleep(0.1)

    def backups(self) -> list[str]:
        return [m.backup_id for m in open_repository(self.config).backups()]


@contextmanager
def harness_for(kind: str, fleet: Fleet) -> Iterator[Harness]:
    fleet.add_source()
    repository = fleet.root / "repository"
    repository.mkdir()
    cluster = None
    if kind == "kubernetes":
        shutil.chown(repository, UID, UID)  # the pods run as the image's user
        cluster = FakeCluster(fleet.root / "cluster")
    try:
        yield Harness(kind, fleet, cluster)
    finally:
        if cluster:
            cluster.close()


@pytest.fixture(params=["local", "kubernetes"])
def harness(request, fleet: Fleet) -> Iterator[Harness]:
    with harness_for(request.param, fleet) as made:
        yield made


def test_a_cycle_runs_to_success_and_leaves_nothing_behind(harness):
    steps = Steps()
    result = harness.run(steps)
    assert result.ok, result.error
    assert result.kind == "bootstrap" and result.bytes_from_source > 0
    assert harness.backups() == [result.backup_id]
    assert steps.seen, "the executor reports what the cycle is doing"
    harness.wait_clean()
    if harness.cluster:
        assert harness.cluster.deletions[-1][1] == "Background", "pods go with their Job"


def test_a_failing_cycle_is_retried_until_the_retries_are_spent(harness):
    harness.settings["retries"] = 2
    harness.fleet.sources[0].kill()  # the source is gone: every attempt fails
    result = harness.run()
    assert not result.ok and not result.busy
    assert "failed after 3 attempts" in result.error, result.error
    assert "unreachable" in result.error, "the cycle's own error comes through"
    assert harness.backups() == []
    harness.wait_clean()


def test_a_cycle_past_its_deadline_is_stopped_and_cleaned_up(harness):
    # 0.6 s: less than a bootstrap takes (about 1.8 s here, with a 2 MB source)
    harness.settings["deadline_minutes"] = 0.01
    result = harness.run()
    assert not result.ok and not result.busy
    assert "deadline" in result.error.lower(), result.error
    harness.wait_clean()
    assert harness.backups() == []


def test_a_shard_busy_elsewhere_is_refused_and_nothing_is_started(harness):
    with harness.occupy():
        result = harness.run()
        assert result.busy and not result.ok, result.error
        assert set(harness.leftovers()) <= {f"job {OTHER_JOB}"}, "nothing was started"
    assert harness.backups() == []
    harness.wait_clean()


def test_two_cycles_of_one_shard_started_at_once_run_one_at_a_time(harness):
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: harness.run(), range(2)))
    assert sorted((r.ok, r.busy) for r in results) == [(False, True), (True, False)], [
        r.error for r in results
    ]
    assert len(harness.backups()) == 1
    harness.wait_clean()


def test_a_lock_left_by_a_runner_that_died_does_not_block_the_shard(harness):
    harness.leave_stale_lock()
    result = harness.run()
    assert result.ok, result.error
    harness.wait_clean()


def test_a_cancelled_cycle_cleans_up_and_stores_nothing(harness):
    cancel = CancelToken()

    def cancel_once_started(step: str) -> None:
        if step in ("provision", "job running (attempt 1)"):
            cancel.cancel("test")

    result = harness.run(Steps(cancel_once_started), cancel)
    assert result.cancelled and not result.ok, result.error
    harness.wait_clean()
    assert harness.backups() == []


def test_the_daemon_runs_its_cycles_as_jobs_and_reports_them(fleet):
    with harness_for("kubernetes", fleet) as made:
        assert made.cluster is not None
        kubeconfig = fleet.root / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
            f"clusters:\n- name: fake\n  cluster:\n    server: {made.cluster.url}\n"
            "users:\n- name: me\n  user:\n    token: not-checked\n"
            "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\n"
        )
        made.executor()  # publishes the ConfigMap and Secret to the fake cluster
        text = made.config_text(pod_paths=True)
        text = text.replace("[kubernetes]\n", f'[kubernetes]\nkubeconfig = "{kubeconfig}"\n')
        config = parse_config(tomllib.loads(text))
        daemon = Daemon(config, open_repository(config))  # the executor comes from the config
        daemon.start()
        try:
            run = daemon.trigger(None)
            deadline = time.monotonic() + 120
            while run.state in ("queued", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            [shard_run] = run.shards.values()
            assert run.state == "succeeded", shard_run.result
            assert shard_run.result and shard_run.result.backup_id in made.backups()
            metrics = exposition(daemon.registry).decode()
            assert (
                'catchup_shard_cycles_total{keyspace="commerce",result="succeeded",shard="0"} 1.0'
                in metrics
            )
        finally:
            daemon.stop(abandon=True, timeout=60)
        made.wait_clean()
