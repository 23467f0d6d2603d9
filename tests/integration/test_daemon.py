"""`catchup serve` as a real process over real sandbox MariaDB shards: the API
triggers backups and reports them to completion, auth is enforced, a busy
shard gets 409, /metrics parses, SIGTERM leaves no half backup and no server,
and the status page renders every shard in headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from catchup.engines.relay import free_port
from tests.conftest import REPO, wait_until_ready
from tests.integration.conftest import Fleet, mariadbd_processes_under

TOKEN = "test-token-" + "0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def daemon(fleet: Fleet, *args: str) -> Iterator[tuple[subprocess.Popen, httpx.Client]]:
    """`catchup serve` on a free loopback port; stopped (SIGKILL if it must) afterwards."""
    port = free_port()
    log = (fleet.root / f"daemon-{port}.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "catchup",
            "serve",
            "-c",
            str(fleet.config_path),
            "--listen",
            f"127.0.0.1:{port}",
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "CATCHUP_API_TOKEN": TOKEN},
        cwd=REPO,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_until_ready(process, client, lambda: (fleet.root / f"daemon-{port}.log").read_text())
        yield process, client
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def wait_for_run(client: httpx.Client, run_id: str, timeout: float = 240) -> tuple[dict, set]:
    """Poll the run until it ends; return it and every step seen on the way."""
    steps: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}", headers=AUTH).json()
        steps |= {s["step"] for s in run["shards"] if s["step"]}
        if run["state"] not in ("queued", "running"):
            return run, steps
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not end")


def trigger(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/api/runs", json=body, headers=AUTH)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Fleet, httpx.Client]]:
    """Two sandbox shards, bootstrapped through the daemon's own API."""
    root = Path(tempfile.mkdtemp(prefix="cu-", dir="/tmp"))
    root.chmod(0o755)
    fleet = Fleet(root)
    try:
        fleet.add_source(server_id=1)
        fleet.add_source(server_id=2)
        # A schedule that cannot fire during the tests, so the page shows a next due time.
        fleet.write_config(tables='[schedule]\ncron = "0 3 1 1 *"\n')
        with daemon(fleet) as (_, client):
            response = trigger(client, all=True)
            assert response.status_code == 202, response.text
            run, _ = wait_for_run(client, response.json()["id"])
            assert run["state"] == "succeeded", [s["error"] for s in run["shards"]]
            yield fleet, client
    finally:
        for source in fleet.sources:
            source.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_a_triggered_backup_reports_its_steps_to_completion(served):
    fleet, client = served
    fleet.sources[0].apply_workload(0.05)
    response = trigger(client, shards=["commerce/-80"])
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["state"] in ("queued", "running") and body["trigger"] == "api"
    run, steps = wait_for_run(client, body["id"])
    assert run["state"] == "succeeded", [s["error"] for s in run["shards"]]
    [shard] = run["shards"]
    assert {"restore", "catch up", "back up"} <= shard["durations"].keys()
    assert len(steps) >= 2 and steps <= {*shard["durations"], "destroy"}, steps
    assert shard["bytes_from_source"] > 0 and shard["backup_id"]

    backups = client.get("/api/backups", params={"shard": "commerce/-80"}, headers=AUTH).json()
    assert [b["kind"] for b in backups] == ["bootstrap", "catchup"]
    assert backups[-1]["id"] == shard["backup_id"]
    shards = {s["shard"]: s for s in client.get("/api/shards", headers=AUTH).json()}
    assert shards["commerce/-80"]["freshness"] == "fresh"
    assert shards["commerce/-80"]["newest_backup_id"] == shard["backup_id"]
    assert len(shards["commerce/-80"]["history"]) == 2
    assert next(r["id"] for r in client.get("/api/runs", headers=AUTH).json()) == body["id"]


def test_a_trigger_for_a_shard_already_running_is_refused_with_409(served):
    _, client = served
    first = trigger(client, shards=["commerce/80-"])
    assert first.status_code == 202
    second = trigger(client, all=True)
    assert second.status_code == 409, second.text
    assert "commerce/80-" in second.json()["detail"]
    run, _ = wait_for_run(client, first.json()["id"])
    assert run["state"] == "succeeded"


def test_every_route_but_health_needs_the_token(served):
    _, client = served
    routes = [("GET", "/api/runs"), ("GET", "/api/shards"), ("GET", "/api/backups")]
    routes += [("GET", "/metrics"), ("POST", "/api/runs"), ("GET", "/api/runs/run-x")]
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = client.request(method, path, headers=headers, json={"all": True})
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {"detail": "unauthorized"}
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "catchup daemon"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"shards": "commerce/-80"}, "list"),
        ({"all": True, "when": "now"}, "when"),
        ({}, "'all': true"),
        ({"shards": ["commerce/nope"]}, "not in the config"),
    ],
)
def test_bad_request_bodies_get_422_with_a_clear_message(served, body, expected):
    _, client = served
    response = client.post("/api/runs", json=body, headers=AUTH)
    assert response.status_code == 422
    assert expected in response.text


def test_metrics_parse_and_carry_the_per_shard_series(served):
    _, client = served
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in (
        "catchup_shard_last_success_timestamp_seconds",
        "catchup_shard_backup_age_seconds",
        "catchup_shard_phase",
        "catchup_shard_phase_duration_seconds",
        "catchup_shard_source_bytes",
        "catchup_shard_data_bytes",
        "catchup_shard_stored_bytes",
        "catchup_shard_new_stored_bytes",
        "catchup_shard_cycles",
        "catchup_shard_catch_up_stalled",
        "catchup_cycles_running",
        "catchup_queue_length",
    ):
        assert name in families, name
    shards = {s.labels["shard"] for s in families["catchup_shard_backup_age_seconds"].samples}
    assert shards == {"-80", "80-"}
    phases = {s.labels["phase"] for s in families["catchup_shard_phase_duration_seconds"].samples}
    assert {"precheck", "catch up", "back up"} <= phases
    cycles = {
        (s.labels["shard"], s.labels["result"]): s.value
        for s in families["catchup_shard_cycles"].samples
        if s.name.endswith("_total")
    }
    assert cycles[("-80", "succeeded")] >= 2
    assert all(s.value > 0 for s in families["catchup_shard_source_bytes"].samples)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
]


def chromium(url: str, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_status_page_shows_every_shard_with_its_freshness(served):
    fleet, client = served
    # A test-only token in a URL fragment: the page moves it to session storage.
    url = f"{client.base_url}/#token={TOKEN}"
    dom = chromium(url, "--dump-dom")
    for shard in fleet.config.shards:
        assert f'data-shard="{shard.name}" data-freshness="fresh"' in dom, dom[-3000:]
    assert "2 shards: 2 fresh" in dom
    screenshot = REPO / "docs" / "status-page.png"
    chromium(url, f"--screenshot={screenshot}", "--window-size=1500,300")
    assert screenshot.stat().st_size > 10_000


@pytest.mark.parametrize("mode", ["abandon", "finish"])
def test_sigterm_during_a_cycle_leaves_no_half_backup_and_no_server(fleet, mode):
    fleet.add_source(size_mb=5)
    fleet.write_config()
    with daemon(fleet, "--on-terminate", mode) as (process, client):
        run_id = trigger(client, all=True).json()["id"]
        deadline = time.monotonic() + 60
        while not mariadbd_processes_under(fleet.root / "work"):
            assert time.monotonic() < deadline, "no ephemeral server appeared"
            time.sleep(0.02)
        step = client.get(f"/api/runs/{run_id}", headers=AUTH).json()["shards"][0]["step"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0
    log = next(fleet.root.glob("daemon-*.log")).read_text()
    assert "Traceback" not in log
    assert not mariadbd_processes_under(fleet.root / "work")
    assert not fleet.instance_dirs()
    backups = fleet.repository.backups()
    if mode == "abandon":
        assert backups == [], f"a backup became visible after SIGTERM at step {step}"
        assert "cancel" in log
    else:
        assert [m.kind for m in backups] == ["bootstrap"], log


def archive_of(client: httpx.Client) -> dict:
    [shard] = client.get("/api/shards", headers=AUTH).json()
    assert shard["archive"] is not None, shard
    return shard["archive"]


def wait_for(condition, timeout: float = 60, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {condition.__doc__ or condition}")


def test_the_daemon_archives_each_shard_shows_it_and_restarts_it_after_a_source_restart(fleet):
    source = fleet.add_source(server_id=1)
    fleet.write_config(tables="[archive]\nenabled = true\nflush_seconds = 0.5\n")
    with daemon(fleet) as (_, client):
        response = trigger(client, all=True)
        run, _ = wait_for_run(client, response.json()["id"])
        assert run["state"] == "succeeded", [s["error"] for s in run["shards"]]
        source.apply_workload(0.01)
        wanted = source.position()

        def holds_the_source() -> dict | None:
            archive = archive_of(client)
            return archive if archive["position"] == wanted else None

        archive = wait_for(holds_the_source)
        assert archive["state"] == "streaming" and archive["archived_bytes"] > 0
        # The window begins at the backup the daemon just took (noted within a few flushes).
        window = wait_for(lambda: archive_of(client)["window_from"])
        [backup] = client.get("/api/backups", headers=AUTH).json()
        assert datetime.fromisoformat(window) == datetime.fromisoformat(backup["created_at"])
        assert backup["pitr_window"]["to_position"] == wanted
        assert archive["lag_seconds"] == 0 and archive["error"] is None
        metrics = client.get("/metrics", headers=AUTH).text
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        assert [s.value for s in families["catchup_archive_up"].samples] == [1]
        assert [s.value for s in families["catchup_archive_pending_bytes"].samples] == [0]
        [archived] = [
            s.value for s in families["catchup_archive_bytes"].samples if s.name.endswith("_total")
        ]
        assert archived == archive["archived_bytes"]

        # The source restarts: the stream breaks, the daemon restarts the archiver, which
        # resumes exactly at the archive's end.
        source.stop()
        wait_for(lambda: archive_of(client)["state"] != "streaming")
        source.start()
        source.apply_workload(0.005)
        wanted = source.position()
        archive = wait_for(holds_the_source, timeout=120)
        assert archive["restarts"] >= 1 and archive["gaps"] == 0
    shard = fleet.config.shards[0]
    index = fleet.repository.archive_index(shard.keyspace, shard.shard)
    assert not index.problems and not index.gaps()
    assert len({record.session for record in index.records}) >= 2
