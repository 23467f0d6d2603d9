"""The PostgreSQL engine: physical standby catch-up to a target LSN.

- bootstrap: a new physical slot for the new chain, then `pg_basebackup -X stream`
  in tar format, unpacked with the tablespaces inside the data dir (basebackup.py);
- catch-up: the restored data dir starts as a standby streaming from the source
  (not through the slot) with `recovery_target_lsn = T` and
  `recovery_target_action = shutdown`; the postmaster exits by itself at T; the
  source's postgresql.auto.conf is neutralised first (autoconf.py);
- archive: only the WAL from the last restartpoint's REDO to minRecoveryPoint;
- the slot is advanced to T only after the new backup's manifest is committed.

Positions are `LSN@timeline:slot`: each chain has its own slot, named in every
position of the chain, so a re-bootstrap that fails leaves the previous chain's
slot, and thus its newest backup, intact. A committed backup releases the slots
of older chains. Positions without `:slot` (older backups) use the legacy name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.config import Config, PostgresSettings, Shard
from catchup.engines import Finding, Progress, Source, Verdict
from catchup.engines.environment import child_environment
from catchup.engines.postgres import autoconf, basebackup
from catchup.engines.postgres.lsn import format_lsn, judge_coverage, parse_lsn, segment_name
from catchup.engines.postgres.server import (
    PostgresFiles,
    PostgresServer,
    config_string,
    find_binaries,
    give_to_server_user,
    run_as,
    run_tool,
)
from catchup.engines.postgres.source import PostgresSession, conninfo_value, legacy_slot_name
from catchup.engines.relay import CountingRelay
from catchup.engines.workdir import instance_dir, record_server
from catchup.errors import (
    CatchUpFailedError,
    CatchUpStalledError,
    InstanceError,
    SourceError,
)
from catchup.files import write_private

# Runtime files of a stopped data dir that must not travel with a backup.
NOT_ARCHIVED = re.compile(
    r"^(postmaster\.(pid|opts)|standby\.signal|recovery\.signal|backup_label\.old"
    r"|pg_wal/archive_status/.*|pg_replslot/.*|pg_stat_tmp/.*|log/.*|tablespace_map)$"
)
WAL_GONE = "has already been removed"
POLL_SECONDS = 0.2


class PostgresSource:
    def __init__(self, session: PostgresSession, relay: CountingRelay, settings: PostgresSettings):
        self.session, self.relay, self.settings = session, relay, settings
        self.released = False  # committed() was called: a backup of this cycle is listed

    @property
    def bytes_sent(self) -> int:
        return self.relay.bytes_from_source

    def server_version(self) -> str:
        return self.session.facts().version

    def require_ready(self) -> None:
        if self.session.facts().wal_level == "minimal":
            raise SourceError(
                f"shard {self.session.shard.name}: source {self.session.shard.endpoint} has "
                "wal_level = minimal, which cannot be replicated; set it to replica and restart"
            )

    def identity(self) -> str:
        return self.session.identity()

    def checkpoint(self) -> str:
        timeline = self.session.facts().timeline
        return make_position(self.session.checkpoint(), timeline, self.session.slot)

    def judge(self, backup_position: str) -> Verdict:
        lsn, timeline = split_position(backup_position)
        self.session.slot = position_slot(backup_position) or legacy_slot_name(self.session.shard)
        return judge_coverage(
            lsn,
            timeline,
            self.session.current_lsn(),
            self.session.facts().timeline,
            self.session.slot_state(),
            self.session.database_bytes(),
            self.settings.rebootstrap_wal_ratio,
            slot_name=self.session.slot,
        )

    def estimated_data_bytes(self) -> int:
        return self.session.database_bytes()

    def committed(self, position: str) -> None:
        """The new backup is committed: the source may now recycle WAL before it, and
        the slots of older chains (a re-bootstrap, a failed one's leftovers) may go."""
        self.released = True
        slot = position_slot(position) or legacy_slot_name(self.session.shard)
        self.session.advance_slot(format_lsn(split_position(position)[0]), slot)
        for other in self.session.shard_slots():
            if other != slot:
                self.session.drop_slot(other)

    def abandon_new_slot(self) -> None:
        """A cycle that created a chain's slot failed before committing: drop the slot,
        or it would hold the source's WAL for ever."""
        if self.session.created_slot and not self.released:
            with contextlib.suppress(SourceError):
                self.session.drop_slot(self.session.created_slot)

    def check(self) -> list[Finding]:
        facts = self.session.facts()
        missing = self.session.missing_privileges()
        findings = [
            Finding("connect", True, f"{facts.version}, timeline {facts.timeline}"),
            Finding(
                "privileges",
                not missing,
                "all required privileges granted"
                if not missing
                else f"missing {', '.join(missing)}; apply the GRANTs from the README",
            ),
            Finding(
                "wal_level",
                facts.wal_level in ("replica", "logical"),
                f"wal_level = {facts.wal_level}"
                + ("" if facts.wal_level != "minimal" else "; set it to replica"),
            ),
        ]
        # Whether the newest backup's own slot still exists is judged with the backup
        # (the "newest backup" line, which names it); here, every slot this shard holds.
        for name in self.session.shard_slots():
            slot = self.session.slot_state(name)
            findings.append(
                Finding(
                    "slot",
                    slot.wal_status not in ("lost", "unreserved"),
                    f"{name}: {slot.wal_status}, restart_lsn "
                    f"{format_lsn(slot.restart_lsn) if slot.restart_lsn else '-'}",
                )
            )
        return findings


def split_position(position: str) -> tuple[int, int]:
    """'X/Y@timeline:slot' → (lsn, timeline)."""
    lsn, _, rest = position.partition("@")
    return parse_lsn(lsn), int(rest.partition(":")[0] or 1)


def make_position(lsn: int, timeline: int, slot: str | None) -> str:
    return f"{format_lsn(lsn)}@{timeline}" + (f":{slot}" if slot else "")


def position_slot(position: str) -> str | None:
    """The chain's slot named in a position; None in positions of older versions."""
    return position.partition("@")[2].partition(":")[2] or None


class PostgresInstance:
    def __init__(self, root: Path, shard: Shard, config: Config, binaries: Path, user: str) -> None:
        self.files = PostgresFiles(root)
        self.shard, self.config, self.user = shard, config, user
        self.settings = config.postgres
        self.server = PostgresServer(
            self.files,
            binaries,
            port=5432,
            settings={
                "shared_buffers": f"{self.settings.shared_buffers_mb}MB",
                "fsync": "off",  # an ephemeral instance: durability comes from the archive
                "full_page_writes": "off",
                "wal_recycle": "off",
                "hot_standby": "on",
                "archive_mode": "off",
                # Tablespaces live in the data dir (basebackup.py); recovery refuses
                # directories in pg_tblspc without this.
                "allow_in_place_tablespaces": "on",
            },
            roles=(user,),
        )
        record_server(root, self.files.data_dir / "postmaster.pid", self.files.data_dir)

    @property
    def data_dir(self) -> Path:
        return self.files.data_dir

    def bootstrap(self, source: Source, cancel: CancelToken, progress: Progress) -> None:
        assert isinstance(source, PostgresSource)
        source.session.create_slot()  # before the base backup: it holds the WAL from here
        self.files.root.mkdir(parents=True, exist_ok=True)
        passfile = self.files.root / "pgpass"
        write_private(passfile, f"*:*:*:*:{_pgpass_escape(source.session.password or '')}\n")
        archives = self.files.root / "basebackup"
        archives.mkdir(mode=0o700)
        give_to_server_user(self.files.root)
        command = [
            *self.server.tool("pg_basebackup"),
            "-d",
            f"host=127.0.0.1 port={source.relay.port} user={conninfo_value(source.session.user)}",
            "-D",
            str(archives),
            "-F",
            "tar",  # every tablespace into `archives`, none to the source's paths
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
            "--no-manifest",
        ]
        estimate = max(1, source.estimated_data_bytes())
        env = child_environment(PGPASSFILE=str(passfile))
        with open(self.files.root / "basebackup.err", "wb") as errors:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=env)
            try:
                while process.poll() is None:
                    cancel.check()
                    progress(min(source.bytes_sent, estimate), estimate)
                    cancel.sleep(0.2)
            except BaseException:
                process.kill()
                process.wait()
                raise
        passfile.unlink(missing_ok=True)
        if process.returncode != 0:
            tail = (self.files.root / "basebackup.err").read_text(errors="replace").strip()
            raise SourceError(f"pg_basebackup of the source failed: {tail.splitlines()[-1:]}")
        basebackup.unpack(archives, self.data_dir)
        archives.rmdir()
        give_to_server_user(self.files.root)

    def start(self, cancel: CancelToken) -> None:
        """Nothing to do yet: a standby needs its recovery target before it starts."""

    def catch_up(
        self, source: Source, checkpoint: str, cancel: CancelToken, progress: Progress
    ) -> str:
        assert isinstance(source, PostgresSource)
        target, timeline = split_position(checkpoint)
        from_standby = source.session.standby
        self._refuse_new_tablespaces(source)
        autoconf.sanitize_file(self.data_dir)  # its primary_conninfo would win over ours
        conninfo = (
            f"host=127.0.0.1 port={source.relay.port} user={conninfo_value(source.session.user)} "
            f"password={conninfo_value(source.session.password or '')} application_name=catchup"
        )
        self.server.write_config(
            {
                **source.session.standby_requirements(),
                "primary_conninfo": config_string(conninfo),
                "recovery_target_lsn": f"'{format_lsn(target)}'",
                "recovery_target_action": "'shutdown'",
                "recovery_target_inclusive": "on",
                "restore_command": "''",
            }
        )
        (self.data_dir / "recovery.signal").unlink(missing_ok=True)
        (self.data_dir / "standby.signal").touch()
        give_to_server_user(self.data_dir / "standby.signal")
        self.server.start()
        self._wait_for_target(
            target, cancel, progress, from_standby, secret=source.session.password
        )
        self._assert_reached(target)
        self._refuse_outside_tablespaces()
        if from_standby:
            return make_position(self._last_record_start(), timeline, position_slot(checkpoint))
        return checkpoint

    def _refuse_new_tablespaces(self, source: PostgresSource) -> None:
        """A tablespace created on the source after this chain's bootstrap: its WAL names
        an absolute path of the source's host, which replay would create or write to on
        this host. Refuse before starting; a new chain carries it inside the data dir."""
        # An empty directory is what versions before in-place tablespaces stored for the
        # symlink: the tablespace's files are missing from that backup.
        inside = [
            oid
            for oid, in_place in basebackup.tablespace_dirs(self.data_dir).items()
            if in_place and any((self.data_dir / "pg_tblspc" / oid).iterdir())
        ]
        new = [(oid, name) for oid, name in source.session.tablespaces() if oid not in inside]
        if new:
            names = ", ".join(f"{name} (oid {oid})" for oid, name in new)
            raise CatchUpFailedError(
                f"shard {self.shard.name}: the source has tablespace {names} that the newest "
                "backup lacks (created after its bootstrap, or backed up by a version that "
                "left tablespaces out); replaying it would write to the source's path on this "
                f"host. Start a new chain: `catchup backup --bootstrap {self.shard.name}`"
            )

    def _refuse_outside_tablespaces(self) -> None:
        """Belt and braces for a tablespace created between the check above and T."""
        links = [
            oid for oid, inside in basebackup.tablespace_dirs(self.data_dir).items() if not inside
        ]
        if links:
            targets = ", ".join(
                f"{oid} -> {os.readlink(self.data_dir / 'pg_tblspc' / oid)}" for oid in links
            )
            raise CatchUpFailedError(
                f"shard {self.shard.name}: replay created tablespaces outside the instance "
                f"({targets}); remove those directories if nothing else uses them, and start a "
                f"new chain: `catchup backup --bootstrap {self.shard.name}`"
            )

    def _wait_for_target(
        self,
        target: int,
        cancel: CancelToken,
        progress: Progress,
        stop_when_passed: bool,
        secret: str | None,
    ) -> None:
        start_lsn, last_lsn, last_change = None, None, time.monotonic()
        while self.server.running:
            cancel.check()
            log = _read(self.files.log)
            if WAL_GONE in log:
                self.server.kill()
                raise CatchUpFailedError(
                    'the source no longer has the WAL after the backup ("requested WAL segment '
                    'has already been removed"); bootstrap again with `catchup backup '
                    "--bootstrap`"
                )
            replayed = self._replayed_lsn()
            if stop_when_passed and replayed is not None and replayed >= target:
                self.server.stop()  # a restartpoint; minRecoveryPoint is where replay stood
                break
            if replayed is not None:
                start_lsn = start_lsn or replayed
                progress(max(0, replayed - start_lsn), max(1, target - start_lsn))
                if replayed != last_lsn:
                    last_lsn, last_change = replayed, time.monotonic()
            if time.monotonic() - last_change > self.config.stall_timeout_seconds:
                self.server.kill()
                raise CatchUpStalledError(
                    f"catch-up stalled: no WAL replayed for {self.config.stall_timeout_seconds:.0f}"
                    f"s at {format_lsn(last_lsn or 0)}; check that the source is reachable; "
                    f"the standby's log: {stall_lines(self.files.log, secret)}"
                )
            time.sleep(POLL_SECONDS)
        code = self.server.exit_code
        if code != 0:
            raise InstanceError(
                f"the ephemeral postgres died (exit code {code}) during catch-up: "
                f"{self.server.log_tail()}"
            )

    def _replayed_lsn(self) -> int | None:
        with contextlib.suppress(Exception), self.server.connect(self.user, timeout=1) as conn:
            value = conn.execute("SELECT pg_last_wal_replay_lsn()").fetchone()[0]
            return parse_lsn(str(value)) if value else None
        return None

    def _assert_reached(self, target: int) -> None:
        control = self.server.controldata()
        state = control.get("Database cluster state", "")
        reached = parse_lsn(control.get("Minimum recovery ending location", "0/0"))
        if state != "shut down in recovery" or reached < target:
            raise CatchUpFailedError(
                f"the standby stopped in state '{state}' at {format_lsn(reached)}, not at the "
                f"target {format_lsn(target)}; see its log: {self.server.log_tail()}"
            )

    def _last_record_start(self) -> int:
        """Where the last replayed record starts: as a recovery target, it makes a restore
        stop exactly where this standby stopped."""
        control = self.server.controldata()
        end = control["Minimum recovery ending location"]
        result = run_tool(
            [
                *self.server.tool("pg_waldump"),
                "-p",
                str(self.data_dir / "pg_wal"),
                "-s",
                control["Latest checkpoint's REDO location"],
                "-e",
                end,
            ]
        )
        starts = re.findall(r"lsn: ([0-9A-F]+/[0-9A-F]+)", result.stdout)
        if not starts:
            raise CatchUpFailedError(f"cannot find the last replayed record before {end}")
        return parse_lsn(starts[-1])

    def stop_for_archive(self) -> None:
        """Already shut down at the target: keep only the WAL a restore needs."""
        control = self.server.controldata()
        timeline = int(control["Latest checkpoint's TimeLineID"])
        first = segment_name(timeline, parse_lsn(control["Latest checkpoint's REDO location"]))
        last = segment_name(timeline, parse_lsn(control["Minimum recovery ending location"]))
        for wal in (self.data_dir / "pg_wal").iterdir():
            if re.fullmatch(r"[0-9A-F]{24}", wal.name) and not first <= wal.name <= last:
                wal.unlink()
        (self.data_dir / "standby.signal").unlink(missing_ok=True)

    def server_version(self) -> str:
        out = run_tool([*self.server.tool("postgres"), "--version"])
        if out.returncode != 0:
            raise InstanceError(f"postgres --version failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def is_archived(self, relative_path: str) -> bool:
        return not NOT_ARCHIVED.match(relative_path)

    def open_for_checks(self, position: str, cancel: CancelToken) -> None:
        """Recover exactly to the backup's position, promote, and accept connections."""
        prepare_recovery(self.data_dir, position)
        self.server.write_config({"recovery_target_action": "'promote'"})
        self.server.start()
        self.server.wait_ready(cancel=cancel)
        deadline = time.monotonic() + 120
        while self._in_recovery():
            cancel.check()
            if time.monotonic() > deadline:
                raise InstanceError("the restored backup did not finish recovery in 120 s")
            time.sleep(0.1)

    def _in_recovery(self) -> bool:
        with self.server.connect(self._superuser()) as conn:
            return bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])

    def _superuser(self) -> str:
        """A superuser role of the restored data, let in over the private socket."""
        with self.server.connect(self.user) as conn:
            name = conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY oid LIMIT 1"
            ).fetchone()[0]
        self.server.allow_role(name)
        return name

    def verify(self, expected_position: str) -> list[Finding]:
        expected, _ = split_position(expected_position)
        log = _read(self.files.log)
        stopped = re.search(r'recovery stopping after WAL location \(LSN\) "([0-9A-F/]+)"', log)
        findings = [
            Finding(
                "position",
                bool(stopped) and parse_lsn(stopped.group(1)) == expected,
                f"recovery stopped at {stopped.group(1) if stopped else '(no stop found)'}; "
                f"manifest {format_lsn(expected)}",
            )
        ]
        amcheck = self.server.binaries / "pg_amcheck"
        if amcheck.exists():
            superuser = self._superuser()
            result = run_tool(
                [
                    *run_as(),
                    str(amcheck),
                    "--all",
                    "--install-missing",
                    "-h",
                    str(self.files.sockets),
                    "-p",
                    str(self.server.port),
                    "-U",
                    superuser,
                ]
            )
            detail = (result.stdout + result.stderr).strip().splitlines()
            findings.append(
                Finding(
                    "pg_amcheck --all",
                    result.returncode == 0,
                    "no corruption found" if result.returncode == 0 else " | ".join(detail[-3:]),
                )
            )
        return findings

    def table_checksums(self) -> dict[str, int | None]:
        with self.server.connect(self._superuser()) as conn:
            return table_checksums(conn)


def table_checksums(conn) -> dict[str, int | None]:  # noqa: ANN001 - a psycopg connection
    """Ordered contents of every user table, hashed (md5 of the rows in order)."""
    tables = conn.execute(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    ).fetchall()
    checksums: dict[str, int | None] = {}
    for (table,) in tables:
        digest = conn.execute(
            f"SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t"
        ).fetchone()[0]
        checksums[table] = int(digest[:15], 16)
    return checksums


def prepare_recovery(data_dir: Path, position: str) -> None:
    """Make a restored data dir recover exactly to `position` on its own and then promote,
    with nothing more to fetch: what `catchup restore` hands to a stock postgres."""
    lsn, _ = split_position(position)
    (data_dir / "standby.signal").unlink(missing_ok=True)
    (data_dir / "recovery.signal").touch()
    settings = (
        "# Written by catchup restore: recover to the backup's position, then promote.\n"
        "restore_command = 'false'\n"
        f"recovery_target_lsn = '{format_lsn(lsn)}'\n"
        "recovery_target_action = 'promote'\n"
        "# Tablespaces are directories in pg_tblspc (in-place): needed to recover them.\n"
        "allow_in_place_tablespaces = on\n"
    )
    # Backups of older versions may still carry the source's upstream settings.
    autoconf.sanitize_file(data_dir)
    auto = data_dir / "postgresql.auto.conf"
    existing = auto.read_text() if auto.exists() else ""
    ours = ("# Written by catchup", "# Tablespaces are directories")
    kept = "".join(line + "\n" for line in existing.splitlines() if not line.startswith(ours))
    fd = os.open(auto, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(kept + settings)


def stall_lines(log: Path, secret: str | None, count: int = 4) -> str:
    """The lines of a standby's log that say why it replays nothing, with `secret` (the
    replication password) masked should a line ever echo it."""
    markers = ("FATAL", "ERROR", "could not", "started streaming")
    lines = [line for line in _read(log).splitlines() if any(m in line for m in markers)]
    quoted = " | ".join(lines[-count:]) or "(nothing relevant in the log)"
    return quoted.replace(secret, "***") if secret else quoted


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class PostgresEngine:
    name = "postgres"

    @contextlib.contextmanager
    def open_source(self, config: Config, shard: Shard) -> Iterator[PostgresSource]:
        user, password = config.login(shard)
        with CountingRelay(shard.host, shard.port, shard.socket) as relay:
            session = PostgresSession(shard, user, password, relay)
            source = PostgresSource(session, relay, config.postgres)
            try:
                yield source
            except BaseException:
                source.abandon_new_slot()
                raise
            finally:
                session.close()

    def prepare_restored(self, data_dir: Path, position: str) -> str:
        prepare_recovery(data_dir, position)
        data_dir.chmod(0o700)
        has_tablespaces = bool(basebackup.tablespace_dirs(data_dir))
        return (
            f"Start it with: postgres -D {data_dir} (chown -R postgres: it first). It replays "
            f"its WAL to exactly {position.partition('@')[0]} and promotes itself; "
            "postgresql.auto.conf holds the recovery settings, remove them afterwards. "
            "postgresql.conf, if the source kept it in its data dir, still has the source's "
            "port, listen_addresses and unix_socket_directories: set them for this host "
            "(or pass -c port=… -c unix_socket_directories=…). Replication, archiving and "
            "preload settings of the source's postgresql.auto.conf were left out (see its "
            "comments)."
            + (
                " Tablespaces are directories under pg_tblspc/: keep allow_in_place_tablespaces"
                " = on while they are; to move one elsewhere, stop the server, move the "
                "directory and leave a symlink in its place."
                if has_tablespaces
                else ""
            )
        )

    @contextlib.contextmanager
    def provision(
        self, config: Config, shard: Shard, server_version: str = ""
    ) -> Iterator[PostgresInstance]:
        found = re.search(r"PostgreSQL\)? (\d+)", server_version)
        if found is None:
            raise InstanceError(f"cannot tell the PostgreSQL major version of {server_version!r}")
        major = int(found.group(1))
        binaries = find_binaries(major, config.postgres.binaries)
        label = f"{shard.keyspace}.{shard.shard}"
        with instance_dir(config.work_dir, label) as root:
            instance = PostgresInstance(
                root, shard, config, binaries, config.credentials_for(shard).user
            )
            try:
                yield instance
            finally:
                instance.server.kill()
                if not instance.files.sockets.is_relative_to(root):
                    shutil.rmtree(instance.files.sockets, ignore_errors=True)
