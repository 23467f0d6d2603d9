"""`catchup demo`: a sandbox fleet backed up twice, then one shard of each
engine proven equal to its source.

1. start N sandbox primaries on private ports: MariaDB (binlog, GTID),
   PostgreSQL (wal_level=replica), or both alternately (`--engine mixed`);
2. load a realistic schema and data into each;
3. back up every shard: the first cycle bootstraps from a consistent dump;
4. start a log archiver per shard; apply a write workload (a few % of rows,
   DDL, a procedure call) in two halves, noting every source's state between
   them; measure the RPO when it ends (how long until the archive holds it);
5. back up every shard again: a catch-up cycle that pulls only the delta, from
   the archive first;
6. restore one shard's newest backup per engine into an ephemeral instance and
   compare every table's checksum and the position with its quiesced source;
   restore the same shards to the moment between the halves, from the archive,
   and compare them with the sources' state at that moment.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.config import Config, Shard, parse_config
from catchup.cycle import CycleOptions, Reporter
from catchup.demo.archive import (
    PitrProof,
    archiving,
    capture_moment,
    measure_rpo,
    prove_point_in_time,
)
from catchup.demo.mariadb import MariaDBSandbox
from catchup.demo.mysql import MySQLSandbox
from catchup.demo.postgres import PostgresSandbox
from catchup.demo.sandbox import Sandbox
from catchup.errors import CatchupError
from catchup.fleet.run import ShardResult, backup_fleet
from catchup.repository import Repository, open_repository
from catchup.verification import VerifyReport, verify_backup

KEYSPACE = "commerce"
log = logging.getLogger("catchup.demo")


@dataclass(frozen=True)
class DemoOptions:
    shards: int = 4
    size_mb: float = 100.0
    directory: Path = Path("catchup-demo")
    parallel: int = 2
    workload_fraction: float = 0.03
    keep: bool = False  # leave the sandbox fleet running afterwards
    engine: str = "mariadb"  # mariadb, mysql, postgres or mixed (the three in turn)


@dataclass
class Proof:
    """One restored shard compared with its quiesced source."""

    shard: str
    backup_id: str
    report: VerifyReport
    position_equal: bool
    checksums_equal: bool
    tables_compared: int

    @property
    def ok(self) -> bool:
        return self.report.ok and self.position_equal and self.checksums_equal


@dataclass
class DemoResult:
    config_path: Path
    cycles: list[tuple[int, ShardResult]] = field(default_factory=list)
    proofs: list[Proof] = field(default_factory=list)
    sources: list[Sandbox] = field(default_factory=list)
    pitr_proofs: list[PitrProof] = field(default_factory=list)
    rpo_seconds: dict[str, float | None] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return bool(self.proofs) and all(proof.ok for proof in self.proofs)

    @property
    def pitr_verified(self) -> bool:
        return bool(self.pitr_proofs) and all(proof.ok for proof in self.pitr_proofs)

    @property
    def ok(self) -> bool:
        return self.verified and self.pitr_verified and all(result.ok for _, result in self.cycles)


def shard_names(count: int) -> list[str]:
    """Vitess-style key ranges when the count divides 256, else plain numbers."""
    if count > 1 and 256 % count == 0:
        bounds = [f"{i * 256 // count:02x}" for i in range(1, count)]
        return [f"{a}-{b}" for a, b in zip(["", *bounds], [*bounds, ""], strict=True)]
    return [str(i) for i in range(count)]


def demo_config(
    root: Path,
    sources: list[Sandbox],
    parallel: int,
    role: str = "primary",
    repository: str | None = None,
    archive: bool = False,
) -> str:
    shards = "\n".join(
        f'[[shards]]\nkeyspace = "{KEYSPACE}"\nshard = "{name}"\nengine = "{source.engine}"\n'
        f'source = "{source.endpoint}"\nrole = "{role}"\n'
        f'credentials = {{ user = "catchup", password_file = "{source.password_file}" }}\n'
        for name, source in zip(shard_names(len(sources)), sources, strict=True)
    )
    return (
        "# Written by `catchup demo`: a sandbox fleet on this machine.\n"
        f'repository = "{repository or root / "repository"}"\n'
        f'work_dir = "{root / "work"}"\n'
        f"parallel = {parallel}\n\n"
        "[retention]\nmin_count = 2\nmin_age_days = 0\n\n"
        + ("[archive]\nenabled = true\n\n" if archive else "")
        + shards
    )


def prepare_directory(root: Path) -> None:
    """Start from nothing, stopping any sandbox a previous `--keep` left running."""
    if root.exists():
        for sandbox in root.glob("sandbox/*"):
            MariaDBSandbox.kill_leftover(sandbox)  # MySQL's too: one server process
            PostgresSandbox.kill_leftover(sandbox)
        shutil.rmtree(root)
    root.mkdir(parents=True)


def new_sandbox(root: Path, index: int, engine: str) -> Sandbox:
    if engine == "mixed":
        engine = ("mariadb", "postgres", "mysql")[index % 3]
    if engine == "postgres":
        return PostgresSandbox(root)
    if engine == "mysql":
        return MySQLSandbox(root, server_id=index + 1)
    return MariaDBSandbox(root, server_id=index + 1)


def start_fleet(root: Path, options: DemoOptions) -> list[Sandbox]:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # PostgreSQL sandboxes run as the postgres OS user
    sources = [
        new_sandbox(root / "sandbox" / f"shard-{i}", i, options.engine)
        for i in range(options.shards)
    ]
    try:
        for source in sources:
            source.start()
    except BaseException:
        stop_fleet(sources)
        raise
    return sources


def on_each(sources: list[Sandbox], action: Callable[[Sandbox], None]) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(action, sources))


def run_demo(
    options: DemoOptions, reporter: Reporter, cancel: CancelToken, say: Callable[[str], None]
) -> DemoResult:
    """Run the whole demo; `say(text)` narrates each phase."""
    root = options.directory.absolute()
    prepare_directory(root)
    kinds = {
        "mariadb": "MariaDB",
        "mysql": "MySQL",
        "postgres": "PostgreSQL",
        "mixed": "MariaDB, PostgreSQL and MySQL",
    }
    say(f"Starting {options.shards} sandbox {kinds[options.engine]} primaries under {root}/sandbox")
    result = DemoResult(config_path=root / "catchup.toml")
    result.sources = start_fleet(root, options)
    try:
        run_cycles(options, result, reporter, cancel, say)
    finally:
        if not options.keep or not result.ok:
            stop_fleet(result.sources)
    return result


def run_cycles(
    options: DemoOptions,
    result: DemoResult,
    reporter: Reporter,
    cancel: CancelToken,
    say: Callable[[str], None],
) -> None:
    sources = result.sources
    root = result.config_path.parent
    say(f"Loading about {options.size_mb:g} MB of realistic data into each")
    on_each(sources, lambda source: source.load_demo_data(options.size_mb))
    result.config_path.write_text(demo_config(root, sources, options.parallel, archive=True))
    config = parse_config(tomllib.loads(result.config_path.read_text()), str(result.config_path))
    repository = open_repository(config)

    def back_up(cycle: int) -> None:
        results = backup_fleet(
            config, config.shards, repository, CycleOptions(), reporter, cancel, options.parallel
        )
        result.cycles += [(cycle, r) for r in results]

    say("Cycle 1: bootstrap every shard from a consistent dump")
    back_up(1)
    say(f"Starting a log archiver per shard (stored every {config.archive.flush_seconds:g} s)")
    with archiving(config, repository) as pool:
        half = options.workload_fraction / 2
        say(
            f"Applying a write workload (~{options.workload_fraction:.0%} of rows, DDL) in "
            "two halves, noting every source's state between them"
        )
        on_each(sources, lambda source: source.apply_workload(half))
        moments = capture_moment(sources)
        on_each(sources, lambda source: source.apply_workload(half))
        say("Measuring the RPO: how long until the archive holds the end of the workload")
        result.rpo_seconds = measure_rpo(pool, config.shards, sources)
        say("Cycle 2: catch up every shard from its previous backup and the archive")
        back_up(2)

    first_of_each: dict[str, tuple[Shard, Sandbox]] = {}
    for shard, source in zip(config.shards, sources, strict=True):
        first_of_each.setdefault(source.engine, (shard, source))
    for shard, source in first_of_each.values():
        say(f"Restoring shard {shard.name} ({source.engine}) and comparing it with its source")
        proof = prove_equal(config, repository, shard, source, cancel)
        if proof:
            result.proofs.append(proof)
        moment = moments[sources.index(source)]
        say(
            f"Restoring shard {shard.name} to {moment.time:%H:%M:%S.%f}, mid-workload, from "
            "the archive, and comparing it with the source's state then"
        )
        result.pitr_proofs.append(prove_point_in_time(config, repository, shard, moment, cancel))


def prove_equal(
    config: Config,
    repository: Repository,
    shard: Shard,
    source: Sandbox,
    cancel: CancelToken,
) -> Proof | None:
    manifest = repository.latest(shard.keyspace, shard.shard)
    if manifest is None:
        return None
    # The source is quiesced: nothing has been written since the last checkpoint.
    position_equal = source.quiesced_at(manifest.position)
    expected = source.checksums()
    report = verify_backup(config, shard, repository, manifest, cancel, with_checksums=True)
    position_equal = position_equal and all(f.ok for f in report.findings if f.check == "position")
    return Proof(
        shard.name,
        manifest.backup_id,
        report,
        position_equal,
        report.checksums == expected,
        len(expected),
    )


SERVE_SCHEDULE = "*/5 * * * *"


def serve_settings(result: DemoResult) -> Path:
    """Give the demo's config a schedule and a daemon section; return the token file."""
    root = result.config_path.parent
    token_file = root / "api-token"
    token_file.touch(mode=0o600)
    token_file.write_text(secrets.token_hex(24) + "\n")
    with result.config_path.open("a") as config:
        config.write(
            f'\n[schedule]\ncron = "{SERVE_SCHEDULE}"\n\n'
            f'[daemon]\nlisten = "127.0.0.1:0"\ntoken_file = "{token_file}"\n'
            'on_terminate = "abandon"\n'
        )
    return token_file


@contextmanager
def writing(sources: list[Sandbox], every_seconds: float = 60) -> Iterator[None]:
    """A light write workload in the background, so scheduled cycles have a delta."""
    stop = threading.Event()

    def write() -> None:
        while not stop.wait(every_seconds):
            try:
                on_each(sources, lambda source: source.apply_workload(0.005))
            except Exception as exc:  # a demo workload hiccup must not stop the daemon
                log.warning("demo workload failed: %s", exc)

    thread = threading.Thread(target=write, name="demo-workload", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def stop_fleet(sources: list[Sandbox]) -> None:
    for source in sources:
        try:
            source.stop()
        except CatchupError:
            source.kill()
