"""Injected faults: whatever dies, no half backup is visible, no server or data
dir is left behind, the source is untouched, and the next run succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from catchup.cycle import LogReporter
from catchup.fleet.lock import shard_lock
from tests.conftest import REPO, run_cli
from tests.integration.conftest import mariadbd_processes_under
from tests.integration.processes import stored_plaintext


class HookReporter(LogReporter):
    """Runs `hook` in the cycle's own thread when a step begins."""

    def __init__(self, step: str, hook) -> None:
        self.at, self.hook, self.fired = step, hook, False

    def step(self, shard: str, step: str) -> None:
        super().step(shard, step)
        if step == self.at and not self.fired:
            self.fired = True
            self.hook()


def start_cli_backup(fleet) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "catchup", "backup", "--all", "-c", str(fleet.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def wait_for_ephemeral_server(fleet, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = mariadbd_processes_under(fleet.root / "work")
        if pids:
            return pids
        time.sleep(0.02)
    raise AssertionError("no ephemeral mariadbd appeared")


def wait_until_gone(fleet, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while mariadbd_processes_under(fleet.root / "work"):
        assert time.monotonic() < deadline, "an ephemeral mariadbd was left running"
        time.sleep(0.05)


def test_kill_9_of_the_ephemeral_server_mid_catch_up(fleet):
    source = fleet.add_source()
    fleet.write_config()
    [first] = fleet.backup()
    source.apply_workload(0.05)
    position = source.position()

    def kill_server():
        for pid in mariadbd_processes_under(fleet.root / "work"):
            os.kill(pid, signal.SIGKILL)

    [failed] = fleet.backup(reporter=HookReporter("catch up", kill_server))
    assert not failed.ok
    assert "ephemeral mariadbd died" in failed.error, failed.error
    assert [m.backup_id for m in fleet.repository.backups()] == [first.backup_id]
    assert not fleet.repository.incomplete()
    assert not fleet.instance_dirs()
    assert not mariadbd_processes_under(fleet.root / "work")
    assert source.position() == position, "the source is untouched"

    [retry] = fleet.backup()
    assert retry.ok and retry.kind == "catchup" and retry.parent == first.backup_id


def test_kill_9_of_catchup_itself_leaves_nothing_the_next_run_cannot_clean(fleet):
    source = fleet.add_source()
    fleet.write_config()
    process = start_cli_backup(fleet)
    wait_for_ephemeral_server(fleet)
    process.kill()
    process.wait()
    wait_until_gone(fleet)  # the kernel took the server down with its parent
    assert fleet.repository.backups() == []

    result = run_cli("backup", "--all", "--json", "-c", str(fleet.config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)[0]["kind"] == "bootstrap"
    assert not fleet.instance_dirs(), "the orphaned instance dir was reaped"
    prune = json.loads(run_cli("prune", "--json", "-c", str(fleet.config_path)).stdout)
    assert all(entry["reason"] == "incomplete" for entry in prune["removed"])
    assert len(fleet.repository.backups()) == 1
    assert source.position()


def test_sigterm_during_a_cycle_cancels_cleanly(fleet):
    fleet.add_source(size_mb=5)
    fleet.write_config()
    process = start_cli_backup(fleet)
    wait_for_ephemeral_server(fleet)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "cancelled" in stdout + stderr
    assert "Traceback" not in stderr
    assert fleet.repository.backups() == []
    assert not fleet.instance_dirs()
    assert not mariadbd_processes_under(fleet.root / "work")


def test_a_second_run_on_a_busy_shard_is_refused(fleet):
    fleet.add_source()
    config = fleet.write_config()
    with shard_lock(config.work_dir, fleet.repository.store, "commerce", "0", 60):
        result = run_cli("backup", "commerce/0", "-c", str(fleet.config_path))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "being backed up or pruned on this host" in result.stdout + result.stderr
    assert fleet.repository.backups() == []
    assert run_cli("backup", "commerce/0", "-c", str(fleet.config_path)).returncode == 0


def test_passwords_never_reach_process_lists_backups_or_logs(fleet, caplog):
    source = fleet.add_source()
    fleet.write_config()
    password = source.password_file.read_text().strip().encode()
    fleet.backup()
    source.apply_workload(0.02)
    seen_in_argv: list[str] = []

    def scan_processes():
        for proc in os.listdir("/proc"):
            if proc.isdigit():
                try:
                    with open(f"/proc/{proc}/cmdline", "rb") as f:
                        if password in f.read():
                            seen_in_argv.append(proc)
                except OSError:
                    pass

    for step in ("bootstrap", "catch up"):
        if step == "bootstrap":
            from catchup.cycle import CycleOptions

            fleet.backup(CycleOptions(force_bootstrap=True), HookReporter(step, scan_processes))
        else:
            source.apply_workload(0.01)
            fleet.backup(reporter=HookReporter(step, scan_processes))
    assert not seen_in_argv
    assert password not in caplog.text.encode()
    repository = fleet.root / "repository"
    for path in repository.rglob("*"):
        if path.is_file():
            assert password not in stored_plaintext(path), f"the password is in {path}"


def test_check_reports_privileges_and_coverage(fleet):
    source = fleet.add_source()
    fleet.write_config()
    ok = run_cli("check", "--json", "-c", str(fleet.config_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    findings = json.loads(ok.stdout)["commerce/0"]
    assert all(f["ok"] for f in findings)

    source.execute("CREATE USER 'weak'@'%' IDENTIFIED BY 'weakpw'")
    source.execute("GRANT REPLICATION SLAVE ON *.* TO 'weak'@'%'")
    weak = fleet.root / "weak.password"
    weak.write_text("weakpw\n")
    weak.chmod(0o600)  # catchup refuses a password file others can read
    text = fleet.config_path.read_text().replace(
        f'user = "catchup", password_file = "{source.password_file}"',
        f'user = "weak", password_file = "{weak}"',
    )
    fleet.config_path.write_text(text)
    bad = run_cli("check", "--json", "-c", str(fleet.config_path))
    assert bad.returncode == 1
    [privileges] = [f for f in json.loads(bad.stdout)["commerce/0"] if f["check"] == "privileges"]
    assert not privileges["ok"] and "SELECT" in privileges["detail"]
    assert "BINLOG MONITOR" in privileges["detail"]


def test_unreachable_source_fails_with_a_clear_message(fleet):
    source = fleet.add_source()
    fleet.write_config()
    source.kill()
    result = run_cli("backup", "--all", "-c", str(fleet.config_path))
    assert result.returncode == 1
    assert "unreachable" in result.stdout and "Connection refused" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_source_reached_only_by_unix_socket(fleet):
    source = fleet.add_source()
    fleet.write_config()
    text = fleet.config_path.read_text().replace(
        f'source = "{source.endpoint}"', f'socket = "{source.server.files.socket}"'
    )
    fleet.config_path.write_text(text)
    [first] = fleet.backup()
    assert first.ok, first.error
    source.apply_workload(0.02)
    [second] = fleet.backup()
    assert second.ok and second.kind == "catchup", second.error
    assert second.position == source.position()


def test_a_frozen_source_fails_the_cycle_after_the_stall_timeout(fleet):
    source = fleet.add_source()
    fleet.write_config()
    fleet.config_path.write_text(
        fleet.config_path.read_text().replace(
            "stall_timeout_seconds = 20", "stall_timeout_seconds = 3"
        )
    )
    [first] = fleet.backup()
    source.apply_workload(0.02)
    position = source.position()
    try:
        [result] = fleet.backup(
            reporter=HookReporter("catch up", lambda: os.kill(source.server.pid, signal.SIGSTOP))
        )
    finally:
        os.kill(source.server.pid, signal.SIGCONT)
    assert not result.ok
    assert "catch-up stalled: no progress for 3s" in result.error, result.error
    assert [m.backup_id for m in fleet.repository.backups()] == [first.backup_id]
    assert not fleet.instance_dirs() and not mariadbd_processes_under(fleet.root / "work")
    assert source.position() == position
    assert fleet.backup()[0].ok


def test_tampering_with_an_encrypted_backup_is_refused_by_restore_and_verify(fleet, short_tmp):
    from catchup.codec.keys import generate_key_file

    source = fleet.add_source()
    generate_key_file(short_tmp / "key.json")
    fleet.write_config(tables=f'\n[encryption]\nkey_files = ["{short_tmp / "key.json"}"]\n')
    [first] = fleet.backup()
    source.apply_workload(0.02)
    [second] = fleet.backup()
    assert second.ok, second.error
    config = str(fleet.config_path)
    assert json.loads(run_cli("verify", "commerce/0", "--deep", "--json", "-c", config).stdout)[
        "verified"
    ]
    shard_dir = fleet.root / "repository" / "commerce" / "0"
    backup_dir = shard_dir / second.backup_id
    manifest = fleet.repository.find("commerce", "0", second.backup_id)
    packs = [shard_dir / "chunks" / "packs" / f"{p.name}.pack" for p in manifest.packs or []]
    victims = [
        (packs, "pack "),  # a byte of every pack the backup uses: some chunk of it is hit
        ([backup_dir / "chunks.zst"], "chunks.zst"),
        ([backup_dir / "manifest.json"], "manifest"),
    ]
    for paths, name in victims:
        originals = [path.read_bytes() for path in paths]
        for path, original in zip(paths, originals, strict=True):
            flipped = bytearray(original)
            flipped[len(flipped) // 3] ^= 0x40
            path.write_bytes(bytes(flipped))
        deep = run_cli("verify", "commerce/0", second.backup_id, "--deep", "--json", "-c", config)
        assert deep.returncode == 1
        assert name in deep.stdout + deep.stderr, deep.stdout + deep.stderr
        target = short_tmp / "restored"
        restored = run_cli(
            "restore", "commerce/0", second.backup_id, "--target-dir", str(target), "-c", config
        )
        assert restored.returncode == 1 and name in restored.stderr, restored.stderr
        assert not target.exists()
        for path, original in zip(paths, originals, strict=True):
            path.write_bytes(original)
    assert (
        run_cli(
            "restore", "commerce/0", "--target-dir", str(short_tmp / "ok"), "-c", config
        ).returncode
        == 0
    )
    assert first.ok
