"""`--timing`: the speed figures again, measured back to back and repeated, after the
cycles (whose step times share the machine with whatever else runs on it).

One more round of the workload on the run's server (the next cycle of its chain),
a clean stop, then `rounds` times, in alternating order: `tar -c | zstd -1 -T0` of
the data dir, and catchup's backup step of it into a fresh copy of the run's
repository (so every repetition is the same steady cycle). Then `rounds` times
`zstd -d | tar -x` vs catchup's restore of that backup. The ratios use the fastest
of each (the least disturbed); the medians are kept too.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
from pathlib import Path

from benchlib import MIB, say
from dedup_parts.cycles import key_file, step, timed_shell
from dedup_parts.source import copy_tree, data_dir, open_source, start
from dedup_parts.workloads import run_workload


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
        source.stop()
    data, repo = data_dir(source), work / f"repo-{workload}"
    tarball, trial = work / "timing.tar.zst", work / "repo-timing"
    spec = spec | {"op": "backup", "key": str(key_file(work)), "data_dir": str(data)}
    loads = [os.getloadavg()[0]]
    tar, steps = [], []
    for i in range(rounds):
        copy_tree(repo, fresh(trial))
        order = ["tar", "step"] if i % 2 == 0 else ["step", "tar"]
        for what in order:
            if what == "tar":
                tar.append(timed_shell(f"tar -c -C {data} . | zstd -1 -T0 -q > {tarball}"))
            else:
                steps.append(step(spec | {"repo": str(trial)}))
        say(f"timing {i + 1}: tar | zstd {tar[-1]:.1f} s, backup step {steps[-1]['seconds']:.1f} s")
    untar, restore = [], []
    for i in range(rounds):
        order = ["untar", "restore"] if i % 2 == 0 else ["restore", "untar"]
        for what in order:
            target = fresh(work / f"timing-{what}")
            if what == "untar":
                target.mkdir()
                untar.append(timed_shell(f"zstd -d -T0 -q < {tarball} | tar -x -C {target}"))
            else:
                restore.append(
                    step(spec | {"op": "restore", "repo": str(trial), "target": str(target)})
                )
        same = subprocess.run(
            ["diff", "-rq", str(data), str(work / "timing-restore")], capture_output=True
        )
        for what in ("untar", "restore"):
            fresh(work / f"timing-{what}")
        say(f"timing {i + 1}: untar {untar[-1]:.1f} s, restore {restore[-1]['seconds']:.1f} s")
    loads.append(os.getloadavg()[0])
    result = {
        "rounds": rounds,
        "tar_zstd_seconds": tar,
        "tar_zstd_bytes": tarball.stat().st_size,
        "step_seconds": [s["seconds"] for s in steps],
        "step_new_stored_mib": steps[0]["new_stored_bytes"] / MIB,
        "untar_seconds": untar,
        "restore_seconds": [r["seconds"] for r in restore],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in [*steps, *restore]),
        "restore_identical": same.returncode == 0,
        "load_average_1min": loads,
    }
    fresh(trial)
    tarball.unlink()
    for key in ("tar_zstd_seconds", "step_seconds", "untar_seconds", "restore_seconds"):
        result[key.replace("seconds", "median")] = statistics.median(result[key])
    return result
