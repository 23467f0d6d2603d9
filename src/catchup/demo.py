"""`catchup demo`: a sandbox fleet backed up twice, then one shard proven equal
to its source.

1. start N sandbox MariaDB primaries (binlog, GTID) on private ports;
2. load a realistic schema and data into each;
3. back up every shard: the first cycle bootstraps from a consistent dump;
4. apply a write workload (a few % of rows, DDL, a procedure call);
5. back up every shard again: a catch-up cycle that pulls only the delta;
6. restore one shard's newest backup into an ephemeral instance and compare
   every table's checksum and the GTID position with its quiesced source.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.config import Config, parse_config
from catchup.cycle import CycleOptions, Reporter
from catchup.engines.mariadb.sandbox import SandboxSource
from catchup.errors import CatchupError
from catchup.fleet.run import ShardResult, backup_fleet
from catchup.repository import Repository, open_repository
from catchup.verification import VerifyReport, verify_backup

KEYSPACE = "commerce"


@dataclass(frozen=True)
class DemoOptions:
    shards: int = 4
    size_mb: float = 100.0
    directory: Path = Path("catchup-demo")
    parallel: int = 2
    workload_fraction: float = 0.03
    keep: bool = False  # leave the sandbox fleet running afterwards


@dataclass
class DemoResult:
    config_path: Path
    cycles: list[tuple[int, ShardResult]] = field(default_factory=list)
    verification: VerifyReport | None = None
    checksums_equal: bool = False
    position_equal: bool = False
    tables_compared: int = 0
    sources: list[SandboxSource] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(
            self.verification
            and self.verification.ok
            and self.checksums_equal
            and self.position_equal
        )

    @property
    def ok(self) -> bool:
        return self.verified and all(result.ok for _, result in self.cycles)


def shard_names(count: int) -> list[str]:
    """Vitess-style key ranges when the count divides 256, else plain numbers."""
    if count > 1 and 256 % count == 0:
        bounds = [f"{i * 256 // count:02x}" for i in range(1, count)]
        return [f"{a}-{b}" for a, b in zip(["", *bounds], [*bounds, ""], strict=True)]
    return [str(i) for i in range(count)]


def demo_config(
    root: Path,
    sources: list[SandboxSource],
    parallel: int,
    role: str = "primary",
    repository: str | None = None,
) -> str:
    shards = "\n".join(
        f'[[shards]]\nkeyspace = "{KEYSPACE}"\nshard = "{name}"\nengine = "mariadb"\n'
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
        f"{shards}"
    )


def prepare_directory(root: Path) -> None:
    """Start from nothing, stopping any sandbox a previous `--keep` left running."""
    if root.exists():
        for pid_file in root.glob("sandbox/*/mariadbd.pid"):
            SandboxSource.kill_leftover(pid_file.parent)
        shutil.rmtree(root)
    root.mkdir(parents=True)


def start_fleet(root: Path, options: DemoOptions) -> list[SandboxSource]:
    sources = [
        SandboxSource(root / "sandbox" / f"shard-{i}", server_id=i + 1)
        for i in range(options.shards)
    ]
    try:
        for source in sources:
            source.start()
    except BaseException:
        stop_fleet(sources)
        raise
    return sources


def on_each(sources: list[SandboxSource], action: str, *args: object) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda s: getattr(s, action)(*args), sources))


def run_demo(
    options: DemoOptions, reporter: Reporter, cancel: CancelToken, say: Callable[[str], None]
) -> DemoResult:
    """Run the whole demo; `say(text)` narrates each phase."""
    root = options.directory.absolute()
    prepare_directory(root)
    say(f"Starting {options.shards} sandbox MariaDB primaries under {root}/sandbox")
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
    on_each(sources, "load_demo_data", options.size_mb)
    result.config_path.write_text(demo_config(root, sources, options.parallel))
    config = parse_config(tomllib.loads(result.config_path.read_text()), str(result.config_path))
    repository = open_repository(config)

    for cycle, narration in (
        (1, "Cycle 1: bootstrap every shard from a consistent dump"),
        (2, "Cycle 2: catch up every shard from its previous backup"),
    ):
        if cycle == 2:
            say(f"Applying a write workload (~{options.workload_fraction:.0%} of rows, DDL)")
            on_each(sources, "apply_workload", options.workload_fraction)
        say(narration)
        results = backup_fleet(
            config, config.shards, repository, CycleOptions(), reporter, cancel, options.parallel
        )
        result.cycles += [(cycle, r) for r in results]

    say("Restoring shard " + config.shards[0].name + " and comparing it with its source")
    prove_equal(config, repository, sources[0], result, cancel)


def prove_equal(
    config: Config,
    repository: Repository,
    source: SandboxSource,
    result: DemoResult,
    cancel: CancelToken,
) -> None:
    shard = config.shards[0]
    manifest = repository.latest(shard.keyspace, shard.shard)
    if manifest is None:
        return
    # The source is quiesced: nothing has been written since the last checkpoint.
    result.position_equal = source.position() == manifest.position
    expected = source.checksums()
    report = verify_backup(config, shard, repository, manifest, cancel, with_checksums=True)
    result.verification = report
    result.checksums_equal = report.checksums == expected
    result.tables_compared = len(expected)


def stop_fleet(sources: list[SandboxSource]) -> None:
    for source in sources:
        try:
            source.stop()
        except CatchupError:
            source.kill()
