"""`--timing`: the speed figures again, measured back to back and repeated, after the
cycles (whose step times share the machine with whatever else runs on it).

One more round of the workload on the run's server (the next cycle of its chain),
a clean stop as catchup's (redo log shrunk), then `rounds` times, in alternating
order: `tar -c | zstd -1 -T0` of the backed-up files (dedup_parts/files.py), and
catchup's backup step of them into a fresh copy of the run's repository (so every
repetition is the same steady cycle). A format 2 backup of the same files (same
jobs, encrypted the same way) goes into a repository of its own. Then `rounds` times,
the order rotating: `zstd -d | tar -x`, catchup's restore of the format 3 backup
(from the run's repository after all its cycles: chunks spread over many packs, the
realistic case) and of the format 2 one, with the run's jobs and with catchup's
default jobs (4). The ratios use the fastest of each (the least disturbed); the
medians are kept too.
"""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path

from benchlib import MIB, say
from dedup_parts.cycles import key_file, step, timed_shell
from dedup_parts.files import same_files, tar_command
from dedup_parts.source import copy_tree, data_dir, open_source, start, stop_for_archive
from dedup_parts.workloads import run_workload

DEFAULT_JOBS = 4  # catchup's default jobs


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def timing(
    work: Path, workload: str, fraction: float, round_: int, rounds: int, spec: dict
) -> dict:
    source = open_source(work / f"run-{workload}")
    start(source)
    try:
        run_workload(source, workload, fraction, round_)
    finally:
        stop_for_archive(source)
    data, repo = data_dir(source), work / f"repo-{workload}"
    tarball, trial = work / "timing.tar.zst", work / "repo-timing"
    format2 = fresh(work / "repo-timing-format2")
    spec = spec | {"op": "backup", "key": str(key_file(work)), "data_dir": str(data)}
    loads = [os.getloadavg()[0]]
    tar, steps = [], []
    for i in range(rounds):
        copy_tree(repo, fresh(trial))
        order = ["tar", "step"] if i % 2 == 0 else ["step", "tar"]
        for what in order:
            if what == "tar":
                tar.append(timed_shell(tar_command(data, work, tarball)))
            else:
                steps.append(step(spec | {"repo": str(trial)}))
        say(f"timing {i + 1}: tar | zstd {tar[-1]:.1f} s, backup step {steps[-1]['seconds']:.1f} s")
    backup2 = step(spec | {"repo": str(format2), "format": 2, "shard": "format2"})
    restores = {
        "restore": spec | {"repo": str(trial)},
        "restore_format2": spec | {"repo": str(format2), "format": 2, "shard": "format2"},
    }
    if spec["jobs"] != DEFAULT_JOBS:
        restores |= {
            f"{name}_jobs{DEFAULT_JOBS}": one | {"jobs": DEFAULT_JOBS}
            for name, one in list(restores.items())
        }
    kinds = ["untar", *restores]
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    identical: dict[str, bool] = {}
    rss = [s["peak_rss_mib"] for s in steps]
    for i in range(rounds):
        order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]
        for what in order:
            target = fresh(work / "timing-restored")
            if what == "untar":
                target.mkdir()
                seconds[what].append(
                    timed_shell(f"zstd -d -T0 -q < {tarball} | tar -x -C {target}")
                )
            else:
                done = step(restores[what] | {"op": "restore", "target": str(target)})
                seconds[what].append(done["seconds"])
                rss.append(done["peak_rss_mib"])
            if i == 0 or what == "restore":
                identical[what] = identical.get(what, True) and same_files(data, target)
            fresh(target)
        say(f"timing {i + 1}: " + ", ".join(f"{k} {seconds[k][-1]:.1f} s" for k in kinds))
    loads.append(os.getloadavg()[0])
    result = {
        "cycle": round_,
        "rounds": rounds,
        "jobs": spec["jobs"],
        "default_jobs": DEFAULT_JOBS,
        "tar_zstd_seconds": tar,
        "tar_zstd_bytes": tarball.stat().st_size,
        "step_seconds": [s["seconds"] for s in steps],
        "step_new_stored_mib": steps[0]["new_stored_bytes"] / MIB,
        "format2_backup_seconds": backup2["seconds"],
        "format2_stored_bytes": backup2["stored_bytes"],
        **{f"{kind}_seconds": seconds[kind] for kind in kinds},
        "peak_rss_mib": max(rss),
        "restore_identical": all(identical.values()),
        "identical": identical,
        "load_average_1min": loads,
    }
    fresh(trial)
    fresh(format2)
    tarball.unlink()
    for key in [k for k in result if k.endswith("_seconds") and isinstance(result[k], list)]:
        result[key.replace("seconds", "median")] = statistics.median(result[key])
    return result
