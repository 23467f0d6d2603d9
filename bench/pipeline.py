"""Backup and restore throughput of catchup's repository pipeline vs tar | zstd.

Usage: .venv/bin/python bench/pipeline.py [--size-gb 2] [--big-gb 10] [--json]

1. Builds (once, cached under --workdir) a real MariaDB data dir of --size-gb:
   a sandbox server loaded with the demo schema, binlogs reset, shut down cleanly.
2. In the same run, on the same warm page cache, measures:
   - backup: catchup (files in parallel: read → zstd → [encrypt] → hash → local
     directory repository, fsynced) vs `tar -c DIR | zstd -1 -T0 > file`;
   - restore: catchup (parallel read → [decrypt] → decompress → hash check →
     write) vs `zstd -d < file | tar -x`;
   with and without encryption, at the same zstd level (1); and encrypted at
   zstd's fast level -1, to show what less compression buys.
3. Peak RSS of the pipeline, in a child process, backing up a ~--big-gb data dir
   (the real one plus copies of its largest schema) and one of 20,000 small files.
4. Writes the results into docs/benchmarks.md between its pipeline markers.

Ratios are catchup's throughput divided by the baseline's (higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchlib import MIB, dir_bytes, machine, today, write_section
from catchup.codec import CodecSettings
from catchup.codec.keys import Keyring, generate_key_file
from catchup.repository import Repository
from catchup.repository.manifest import BackupHeader, Manifest, SourceInfo
from catchup.storage.local import LocalStore

BEGIN, END = "<!-- pipeline:begin -->", "<!-- pipeline:end -->"


def build_mariadb_datadir(workdir: Path, size_gb: float) -> Path:
    """A real data dir of about `size_gb`, built once and reused."""
    from catchup.demo.mariadb import MariaDBSandbox

    root = workdir / f"mariadb-{size_gb:g}g"
    data = root / "data"
    if (root / "complete").exists():
        return data
    shutil.rmtree(root, ignore_errors=True)
    source = MariaDBSandbox(root, server_id=1)
    source.start()
    try:
        # Measured: ~1.1 MB of data-dir files per "MB" of demo table data.
        source.load_demo_data(size_gb * 1024 / 1.1)
        source.execute("RESET MASTER")
        source.stop()
    except BaseException:
        source.kill()
        raise
    (root / "complete").touch()
    return data


def settle(*paths: Path) -> None:
    """Remove what the previous run wrote, and let its writeback finish, so that no
    run pays for an earlier one's dirty pages."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    os.sync()


def warm(path: Path) -> None:
    """Read everything once so both contenders start from the same page cache."""
    # Not `tar -cf - … > /dev/null`: GNU tar skips reading file contents into /dev/null.
    subprocess.run(f"find '{path}' -type f -exec cat {{}} + > /dev/null", shell=True, check=True)


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def header() -> BackupHeader:
    """Placeholders, all but the time: the data path measured here reads none of them."""
    source = SourceInfo(endpoint="bench", role="primary")
    names = {"keyspace": "bench", "shard": "0", "server_version": "bench", "position": ""}
    return BackupHeader(
        **names, engine="mariadb", kind="bootstrap", parent=None, source=source,
        started_at=datetime.now(UTC), bytes_from_source=0, durations={},
    )  # fmt: skip


def ours_backup(data: Path, repo_dir: Path, keyring: Keyring, jobs: int, level: int) -> Manifest:
    repository = Repository(LocalStore(repo_dir), keyring)
    listing = repository.scan(data, lambda rel: False)
    return repository.write_backup(header(), data, listing, CodecSettings(level, 0), jobs)


def ours_restore(repo_dir: Path, keyring: Keyring, target: Path, jobs: int) -> None:
    repository = Repository(LocalStore(repo_dir), keyring)
    repository.restore(repository.backups()[-1], target, jobs)


def baseline_backup(data: Path, archive: Path) -> None:
    subprocess.run(f"tar -c -C '{data}' . | zstd -q -1 -T0 > '{archive}'", shell=True, check=True)


def baseline_restore(archive: Path, target: Path) -> None:
    target.mkdir(parents=True)
    subprocess.run(f"zstd -q -d < '{archive}' | tar -x -C '{target}'", shell=True, check=True)


def best_of(runs: int, action: object, before: object = None) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()  # type: ignore[operator]
        times.append(timed(action))
    return min(times)


def contenders(encrypted: Keyring, level: int) -> list[tuple[str, Keyring, int]]:
    """catchup's configurations: name, keyring and zstd level."""
    return [
        ("plain", Keyring(), level),
        ("encrypted", encrypted, level),
        ("encrypted_fast", encrypted, -1),
    ]


LABELS = {
    "plain": "catchup, not encrypted",
    "encrypted": "catchup, AES-256-GCM encrypted",
    "encrypted_fast": "catchup, encrypted, zstd level -1",
}


def measure_throughput(data: Path, work: Path, jobs: int, level: int, runs: int) -> dict:
    size = dir_bytes(data)
    key_file = work / "bench.key"
    if not key_file.exists():
        generate_key_file(key_file)
    archive, target, repo_dir = work / "baseline.tar.zst", work / "restored", work / "repo"
    result: dict = {"data_bytes": size, "files": sum(1 for p in data.rglob("*") if p.is_file())}

    result["baseline_backup_s"] = best_of(
        runs, lambda: baseline_backup(data, archive), lambda: (settle(archive), warm(data))
    )
    result["baseline_stored_bytes"] = archive.stat().st_size
    result["baseline_restore_s"] = best_of(
        runs, lambda: baseline_restore(archive, target), lambda: settle(target)
    )
    archive.unlink()
    encrypted = Keyring.from_files([key_file])
    for name, keyring, at_level in contenders(encrypted, level):
        holder: dict = {}

        def backup(keyring: Keyring = keyring, holder: dict = holder, at: int = at_level) -> None:
            holder["manifest"] = ours_backup(data, repo_dir, keyring, jobs, at)

        result[f"{name}_backup_s"] = best_of(
            runs, backup, lambda: (settle(repo_dir, target), warm(data))
        )
        result[f"{name}_stored_bytes"] = holder["manifest"].stored_bytes
        result[f"{name}_restore_s"] = best_of(
            runs,
            lambda keyring=keyring: ours_restore(repo_dir, keyring, target, jobs),
            lambda: settle(target),
        )
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(repo_dir, ignore_errors=True)
    for phase in ("backup", "restore"):
        base = size / result[f"baseline_{phase}_s"]
        result[f"baseline_{phase}_mib_s"] = round(base / MIB, 1)
        for name, _, _ in contenders(encrypted, level):
            ours = size / result[f"{name}_{phase}_s"]
            result[f"{name}_{phase}_mib_s"] = round(ours / MIB, 1)
            result[f"{name}_{phase}_ratio"] = round(ours / base, 2)
    return result


def build_big_datadir(real: Path, work: Path, target_gb: float) -> Path:
    """The real data dir plus copies of its largest schema, up to `target_gb`."""
    big = work / f"big-{target_gb:g}g"
    if (big / ".complete").exists():
        return big
    shutil.rmtree(big, ignore_errors=True)
    shutil.copytree(real, big)
    schema = max((p for p in real.iterdir() if p.is_dir()), key=dir_bytes)
    copy = 1
    while dir_bytes(big) < target_gb * 1024**3:
        shutil.copytree(schema, big / f"{schema.name}_copy{copy}")
        copy += 1
    (big / ".complete").touch()
    return big


def build_small_files(work: Path, count: int) -> Path:
    small = work / f"small-{count}"
    if (small / ".complete").exists():
        return small
    shutil.rmtree(small, ignore_errors=True)
    for i in range(count):
        directory = small / f"db{i % 200:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        body = (f"table {i} row data " * (64 + i % 512)).encode()
        (directory / f"t{i:05d}.ibd").write_bytes(body[: 1024 + (i * 97) % 16384])
    (small / ".complete").touch()
    return small


def child_peak_rss(data: Path, work: Path, jobs: int, level: int) -> float:
    """Peak RSS (MiB) of a fresh process that backs up `data`, encrypted."""
    repo_dir = work / "rss-repo"
    shutil.rmtree(repo_dir, ignore_errors=True)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child-backup",
            str(data),
            str(repo_dir),
            str(work / "bench.key"),
            str(jobs),
            str(level),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    shutil.rmtree(repo_dir, ignore_errors=True)
    return float(out.stdout.strip())


def child_backup(data: str, repo_dir: str, key_file: str, jobs: str, level: str) -> None:
    ours_backup(
        Path(data), Path(repo_dir), Keyring.from_files([Path(key_file)]), int(jobs), int(level)
    )
    print(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))


def report_markdown(r: dict, args: argparse.Namespace) -> str:
    gib = r["data_bytes"] / 1024**3
    row = "| {} | {:.1f} | {} | {:.2f} | {:.1f} | {:.2f} |"
    lines = [
        f"## Repository pipeline (`bench/pipeline.py`, {r['date']})",
        "",
        f"Machine: {r['machine']}. Data: a real MariaDB 10.11 data dir of {gib:.2f} GiB in "
        f"{r['files']} files (demo schema, clean shutdown). Repository: a local directory; "
        f"catchup with {args.jobs} files in parallel, zstd level {args.level} unless the row "
        "says otherwise, every object "
        "fsynced. Baselines: `tar -c DIR | zstd -1 -T0 > file` and "
        "`zstd -d < file | tar -x` (no fsync). Best of "
        f"{args.runs} runs each, each from a warm page cache with no writeback of an "
        "earlier run pending.",
        "",
        "| pipeline | backup MiB/s | stored | backup ratio | restore MiB/s | restore ratio |",
        "| --- | --- | --- | --- | --- | --- |",
        row.format(
            "tar \\| zstd -1 -T0 (baseline)",
            r["baseline_backup_mib_s"],
            f"{r['baseline_stored_bytes'] / MIB:.0f} MiB",
            1.0,
            r["baseline_restore_mib_s"],
            1.0,
        ),
    ]
    for name, label in LABELS.items():
        lines.append(
            row.format(
                label,
                r[f"{name}_backup_mib_s"],
                f"{r[f'{name}_stored_bytes'] / MIB:.0f} MiB",
                r[f"{name}_backup_ratio"],
                r[f"{name}_restore_mib_s"],
                r[f"{name}_restore_ratio"],
            )
        )
    lines += [
        "",
        "Peak RSS of the encrypted backup pipeline in a fresh process (target ≤ 300 MiB):",
        "",
        "| data dir | size | files | peak RSS |",
        "| --- | --- | --- | --- |",
    ]
    for item in r["rss"]:
        lines.append(
            f"| {item['name']} | {item['bytes'] / 1024**3:.2f} GiB | {item['files']} | "
            f"{item['peak_rss_mib']:.0f} MiB |"
        )
    lines += [
        "",
        f"Targets on this machine: backup ratio ≥ 1.5 (measured {r['backup_ratio']}), restore "
        f"ratio ≥ 1.2 (measured {r['restore_ratio']}), peak RSS ≤ 300 MiB (measured "
        f"{r['peak_rss_mib']} MiB). The headline ratios are the encrypted pipeline's.",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-backup":
        child_backup(*sys.argv[2:7])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--big-gb", type=float, default=10.0)
    parser.add_argument("--small-files", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/catchup-bench"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="Do not update docs/benchmarks.md")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    data = build_mariadb_datadir(args.workdir, args.size_gb)
    result = measure_throughput(data, args.workdir, args.jobs, args.level, args.runs)
    result["rss"] = []
    for name, path in (
        (
            f"MariaDB data dir grown to ~{args.big_gb:g} GB",
            build_big_datadir(data, args.workdir, args.big_gb),
        ),
        (f"{args.small_files} small files", build_small_files(args.workdir, args.small_files)),
    ):
        result["rss"].append(
            {
                "name": name,
                "bytes": dir_bytes(path),
                "files": sum(1 for p in path.rglob("*") if p.is_file()),
                "peak_rss_mib": child_peak_rss(path, args.workdir, args.jobs, args.level),
            }
        )
    result.update(
        date=today(),
        machine=machine(),
        backup_ratio=result["encrypted_backup_ratio"],
        restore_ratio=result["encrypted_restore_ratio"],
        peak_rss_mib=max(item["peak_rss_mib"] for item in result["rss"]),
    )
    if not args.no_write:
        write_section(BEGIN, END, report_markdown(result, args))
    if args.json:
        print(
            json.dumps(
                {
                    "backup_ratio": result["backup_ratio"],
                    "restore_ratio": result["restore_ratio"],
                    "peak_rss_mib": result["peak_rss_mib"],
                    "details": result,
                },
                indent=2,
            )
        )
    else:
        print(report_markdown(result, args))


if __name__ == "__main__":
    main()
