"""Phase 2 of bench/dedup.py: backup cycles of one workload against catchup's
repository (format 3, encrypted), with format 2 and a mariadb-backup incremental
chain beside it, and the tar | zstd baselines on the final data dir."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import MIB, dir_bytes, say
from catchup.codec.keys import generate_key_file
from catchup.demo.mariadb import MariaDBSandbox
from dedup_parts.files import file_set, same_files, tar_command
from dedup_parts.source import copy_tree, data_dir, open_source, start, stop_for_archive
from dedup_parts.workloads import run_workload
from impact.measure import shell

STEP = Path(__file__).with_name("step.py")


def step(spec: dict) -> dict:
    """One catchup step in a child process (its own time and peak RSS)."""
    result = subprocess.run(
        [sys.executable, str(STEP), json.dumps(spec)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"catchup step {spec['op']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def key_file(work: Path) -> Path:
    path = work / "bench.key"
    if not path.exists():
        generate_key_file(path)
    return path


def timed_shell(command: str) -> float:
    started = time.perf_counter()
    shell(command)
    return time.perf_counter() - started


class XtraChain:
    """A mariadb-backup chain: a full backup, then one --incremental per cycle (its
    --incremental-basedir the previous one's checkpoints), each streamed through zstd -1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        self.sizes: list[int] = []

    def take(self, source: MariaDBSandbox) -> int:
        n = len(self.sizes)
        lsn, out = self.root / f"lsn-{n}", self.root / f"backup-{n}.xb.zst"
        incremental = f"--incremental-basedir={self.root / f'lsn-{n - 1}'}" if n else ""
        scratch = self.root / "tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        shell(
            f"{source.server.program('mariadb-backup')} "
            f"--defaults-extra-file={source.server.files.client_config} "
            f"--backup --stream=xbstream --target-dir={scratch} --extra-lsndir={lsn} "
            f"{incremental} | zstd -1 -T0 -q > {out}"
        )
        self.sizes.append(out.stat().st_size)
        return self.sizes[-1]


def run_cycles(
    base: Path,
    work: Path,
    workload: str,
    cycles: int,
    fraction: float,
    size_kib: int,
    jobs: int,
    format2_at: set[int],
    chain: bool,
) -> dict:
    """Cycle 0 backs up the base; cycles 1..N each apply one round of `workload`."""
    root, repo = work / f"run-{workload}", work / f"repo-{workload}"
    copy_tree(base, root)
    shutil.rmtree(repo, ignore_errors=True)
    source = open_source(root)
    xb = XtraChain(work / f"xb-{workload}") if chain else None
    spec = {
        "op": "backup",
        "repo": str(repo),
        "key": str(key_file(work)),
        "format": 3,
        "size_kib": size_kib,
        "data_dir": str(data_dir(source)),
        "shard": workload,
        "jobs": jobs,
    }
    records: list[dict] = []
    try:
        cycle_all(source, workload, cycles, fraction, spec, xb, format2_at, records, work)
    finally:
        if source.server.running:
            source.stop()
    return {
        "records": records,
        "file_set": file_set(Path(spec["data_dir"])),
        "baselines": baselines(work, workload, spec),
    }


def cycle_all(
    source: MariaDBSandbox,
    workload: str,
    cycles: int,
    fraction: float,
    spec: dict,
    xb: XtraChain | None,
    format2_at: set[int],
    records: list[dict],
    work: Path,
) -> None:
    repo = Path(spec["repo"])
    for cycle in range(cycles + 1):
        record: dict = {"cycle": cycle}
        if cycle or xb:
            start(source)
            if cycle:
                started = time.perf_counter()
                record["transactions"] = run_workload(source, workload, fraction, cycle)
                record["workload_seconds"] = time.perf_counter() - started
            if xb:
                record["xb_bytes"] = xb.take(source)
            stop_for_archive(source)
        record |= step(spec)
        record["repo_bytes"] = dir_bytes(repo)
        if cycle in format2_at:
            record["format2_bytes"] = format2_size(work, spec)
        new_mib = (record["new_stored_bytes"] or 0) / MIB
        say(
            f"{workload} cycle {cycle}: backup step {record['seconds']:.1f} s, "
            f"new {new_mib:.1f} MiB, repo {record['repo_bytes'] / MIB:.0f} MiB"
        )
        records.append(record)


def format2_size(work: Path, spec: dict) -> int:
    """What this cycle costs in format 2: a full zstd copy, one object per file."""
    repo = work / "repo-format2"
    shutil.rmtree(repo, ignore_errors=True)
    result = step(spec | {"repo": str(repo), "format": 2, "shard": "format2"})
    shutil.rmtree(repo, ignore_errors=True)
    return result["stored_bytes"]


def baselines(work: Path, workload: str, spec: dict) -> dict:
    """On the final data dir, page cache warm for both: `tar -c | zstd -1 -T0` vs the
    backup step just timed, and `zstd -d | tar -x` vs catchup's restore of that backup."""
    data = Path(spec["data_dir"])
    tarball = work / "baseline.tar.zst"
    tar_seconds = timed_shell(tar_command(data, work, tarball))
    tar_bytes = tarball.stat().st_size
    untar, restored = work / "restore-tar", work / "restore-catchup"
    for target in (untar, restored):
        shutil.rmtree(target, ignore_errors=True)
    untar.mkdir()
    untar_seconds = timed_shell(f"zstd -d -T0 -q < {tarball} | tar -x -C {untar}")
    restore = step({**spec, "op": "restore", "target": str(restored)})
    same = same_files(data, restored)
    for path in (tarball, untar, restored):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
    return {
        "tar_zstd_seconds": tar_seconds,
        "tar_zstd_bytes": tar_bytes,
        "untar_seconds": untar_seconds,
        "restore_seconds": restore["seconds"],
        "restore_peak_rss_mib": restore["peak_rss_mib"],
        "restore_identical": same,
    }
