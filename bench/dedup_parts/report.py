"""Phase 2's figures, its plot and its section of docs/benchmarks.md."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchlib import IMG, MIB

BEGIN, END = "<!-- dedup:begin -->", "<!-- dedup:end -->"
GIB = 1 << 30


def steady(records: list[dict]) -> list[dict]:
    """The steady cycles: from the second round of the workload on (the first follows
    the bulk load, whose pages InnoDB has not touched since)."""
    return records[2:] or records[1:]


def new_ratio(run: dict) -> float:
    return statistics.median(
        r["new_stored_bytes"] / r["data_bytes"] for r in steady(run["records"])
    )


def format2_series(records: list[dict]) -> list[float]:
    """Format 2's size per cycle: measured where measured, linear in between."""
    known = [(r["cycle"], r["format2_bytes"]) for r in records if "format2_bytes" in r]
    out = []
    for r in records:
        before = max((k for k in known if k[0] <= r["cycle"]), default=known[0])
        after = min((k for k in known if k[0] >= r["cycle"]), default=known[-1])
        span = after[0] - before[0]
        share = (r["cycle"] - before[0]) / span if span else 0.0
        out.append(before[1] + (after[1] - before[1]) * share)
    return out


def cumulative(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for value in values:
        total += value
        out.append(total)
    return out


def headline(results: dict) -> dict:
    skewed, uniform = results["skewed"], results["uniform"]
    last = skewed["records"][-1]
    base = skewed["baselines"]
    rss = [r["peak_rss_mib"] for run in (skewed, uniform) for r in run["records"]]
    rss += [run["baselines"]["restore_peak_rss_mib"] for run in (skewed, uniform)]
    figures = {
        "stored_new_ratio_skewed": round(new_ratio(skewed), 4),
        "stored_new_ratio_uniform": round(new_ratio(uniform), 4),
        "backup_step_ratio": round(base["tar_zstd_seconds"] / last["seconds"], 2),
        "restore_ratio": round(base["untar_seconds"] / base["restore_seconds"], 2),
        # The same tar time against the median steady backup step (one cycle can be noisy).
        "backup_step_ratio_median": round(
            base["tar_zstd_seconds"]
            / statistics.median(r["seconds"] for r in steady(skewed["records"])),
            2,
        ),
        "peak_rss_mib": round(max(rss), 1),
        "chunk_kib": results["chunk_kib"],
        "cycles": len(skewed["records"]) - 1,
        "data_gib": round(last["data_bytes"] / GIB, 2),
        "format3_total_gib_skewed": round(skewed["records"][-1]["repo_bytes"] / GIB, 3),
        "format3_total_gib_uniform": round(uniform["records"][-1]["repo_bytes"] / GIB, 3),
        "format2_total_gib": round(cumulative(format2_series(skewed["records"]))[-1] / GIB, 3),
        "xb_chain_total_gib": round(sum(r["xb_bytes"] for r in skewed["records"]) / GIB, 3),
    }
    timing = results.get("timing")
    if timing:  # repeated back to back: the fastest of each
        figures |= {
            "backup_step_ratio": round(
                min(timing["tar_zstd_seconds"]) / min(timing["step_seconds"]), 2
            ),
            "backup_step_ratio_median": round(timing["tar_zstd_median"] / timing["step_median"], 2),
            "restore_ratio": round(
                min(timing["untar_seconds"]) / min(timing["restore_seconds"]), 2
            ),
            "restore_ratio_median": round(timing["untar_median"] / timing["restore_median"], 2),
            "restore_vs_format2": round(
                min(timing["restore_format2_seconds"]) / min(timing["restore_seconds"]), 2
            ),
            "restore_vs_format2_median": round(
                timing["restore_format2_median"] / timing["restore_median"], 2
            ),
            "peak_rss_mib": round(max(figures["peak_rss_mib"], timing["peak_rss_mib"]), 1),
        }
        jobs = timing["default_jobs"]
        if f"restore_jobs{jobs}_seconds" in timing:  # catchup's default jobs too
            fastest = {
                k: min(timing[f"{k}_jobs{jobs}_seconds"]) for k in ("restore", "restore_format2")
            }
            figures |= {
                f"restore_ratio_jobs{jobs}": round(
                    min(timing["untar_seconds"]) / fastest["restore"], 2
                ),
                f"restore_vs_format2_jobs{jobs}": round(
                    fastest["restore_format2"] / fastest["restore"], 2
                ),
            }
    for workload in ("skewed", "uniform"):
        if "repack" in results.get(workload, {}):
            figures[f"repack_share_at_most_{workload}"] = round(repack_share(results[workload]), 3)
    return figures


def repack_share(run: dict) -> float:
    """At most this share of the steady cycles' new stored bytes re-stores chunks of
    sparse packs (repack.py)."""
    rows = run["repack"][1:]  # per backup from cycle 1 on; steady: cycle 2 on
    new = sum(r["new_stored_bytes"] for r in rows)
    return sum(r["repacked_at_most"] for r in rows) / new if new else 0.0


def plot(results: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skewed, uniform = results["skewed"]["records"], results["uniform"]["records"]
    cycles = [r["cycle"] for r in skewed]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = [
        ("format 3, skewed", [r["repo_bytes"] for r in skewed]),
        ("format 3, uniform", [r["repo_bytes"] for r in uniform]),
        ("format 2 (a full zstd copy per backup)", cumulative(format2_series(skewed))),
        (
            "mariadb-backup full + --incremental chain, zstd -1",
            cumulative([r["xb_bytes"] for r in skewed]),
        ),
    ]
    for label, values in series:
        ax.plot(cycles[: len(values)], [v / GIB for v in values], marker="o", label=label)
    ax.set_xlabel("backup cycle (cycle 0: the first full backup; 1 % of rows changed per cycle)")
    ax.set_ylabel("stored bytes, cumulative (GiB)")
    ax.set_title(f"Storage after each cycle, {skewed[-1]['data_bytes'] / GIB:.1f} GiB data dir")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = IMG / "dedup-storage.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def cycle_table(run: dict) -> list[str]:
    lines = [
        "| cycle | backup step s | new stored MiB | new ÷ data dir | repository GiB "
        "| peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run["records"]:
        lines.append(
            f"| {r['cycle']} | {r['seconds']:.1f} | {r['new_stored_bytes'] / MIB:.1f} | "
            f"{r['new_stored_bytes'] / r['data_bytes']:.4f} | {r['repo_bytes'] / GIB:.3f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    return lines


def figure_rows(f: dict) -> list[str]:
    rows = [
        (
            "new stored bytes per steady cycle ÷ data dir, skewed",
            "stored_new_ratio_skewed",
            "≤ 0.10",
        ),
        ("new stored bytes per steady cycle ÷ data dir, uniform", "stored_new_ratio_uniform", ""),
        ("`tar -c \\| zstd -1 -T0` time ÷ backup step time", "backup_step_ratio", "≥ 2.0"),
        ("the same, medians", "backup_step_ratio_median", ""),
        ("`zstd -d \\| tar -x` time ÷ catchup restore time", "restore_ratio", "≥ 1.0"),
        ("the same, medians", "restore_ratio_median", ""),
        ("format 2 restore time ÷ format 3 restore time", "restore_vs_format2", "≥ 1.0"),
        ("the same, medians", "restore_vs_format2_median", ""),
        ("`zstd -d \\| tar -x` ÷ catchup restore, 4 jobs", "restore_ratio_jobs4", ""),
        ("format 2 ÷ format 3 restore, 4 jobs", "restore_vs_format2_jobs4", ""),
        ("peak RSS of catchup's backup or restore, MiB", "peak_rss_mib", ""),
    ]
    return [f"| {label} | {f[key]:g} | {goal} |" for label, key, goal in rows if key in f]


def timing_text(timing: dict, cycles: int) -> list[str]:
    def seconds(key: str) -> str:
        return ", ".join(f"{s:.1f}" for s in timing[key]) + " s"

    load = " → ".join(f"{x:.1f}" for x in timing["load_average_1min"])
    same = "identical to" if timing["restore_identical"] else "NOT IDENTICAL to"
    jobs = timing["default_jobs"]
    lines = [
        f"Speed, on one more skewed cycle (cycle {timing.get('cycle', cycles + 1)}, "
        f"{timing['step_new_stored_mib']:.0f} MiB new), timed {timing['rounds']} "
        "times back to back in alternating (restores: rotating) order, page cache warm; "
        "the ratios above use the fastest of each (other work shared this 2-core machine: "
        f"1-minute load average {load}):",
        "",
        f"- `tar -c | zstd -1 -T0` ({timing['tar_zstd_bytes'] / GIB:.2f} GiB): "
        f"{seconds('tar_zstd_seconds')}; catchup's backup step (into a fresh copy of the "
        f"run's repository each time): {seconds('step_seconds')};",
        f"- `zstd -d | tar -x`: {seconds('untar_seconds')}; catchup's restore of the format 3 "
        "backup (from the run's repository after all its cycles: its chunks spread over "
        f"the packs of every cycle), {timing['jobs']} jobs: {seconds('restore_seconds')}; "
        "of a format 2 backup of the same files (a repository of its own, same jobs, "
        f"encrypted the same way; that backup took {timing['format2_backup_seconds']:.1f} s "
        f"and stored {timing['format2_stored_bytes'] / GIB:.2f} GiB): "
        f"{seconds('restore_format2_seconds')};",
    ]
    if f"restore_jobs{jobs}_seconds" in timing:
        lines.append(
            f"- with catchup's default {jobs} jobs: format 3 "
            f"{seconds(f'restore_jobs{jobs}_seconds')}, format 2 "
            f"{seconds(f'restore_format2_jobs{jobs}_seconds')}."
        )
    lines.append(
        "- The restored trees (of each kind in the first round, format 3's in every round) "
        f"were {same} the backed-up files."
    )
    return lines


def baseline_text(name: str, run: dict) -> str:
    b, last = run["baselines"], run["records"][-1]
    same = "identical to" if b["restore_identical"] else "NOT IDENTICAL to"
    return (
        f"{name}: `tar | zstd` {b['tar_zstd_seconds']:.1f} s ({b['tar_zstd_bytes'] / GIB:.2f} GiB)"
        f" vs the backup step {last['seconds']:.1f} s; `zstd -d | tar -x` "
        f"{b['untar_seconds']:.1f} s vs catchup's restore {b['restore_seconds']:.1f} s "
        f"(restored tree {same} the backed-up files)."
    )


def file_set_text(run: dict) -> str:
    f = run["file_set"]
    numbered = [name for name in f["left_out"] if name.split(".")[-1].isdigit()]
    others = [name for name in f["left_out"] if name not in numbered]
    left = ", ".join(
        [f"`{numbered[0]}` to `{numbered[-1]}` ({len(numbered)} binlogs)"] * bool(numbered)
        + [f"`{name}`" for name in others]
    )
    return (
        "What is backed up, by every method here (catchup's backup step, format 2, `tar`): "
        "what catchup's own archive of the data dir holds, i.e. every file and directory of "
        "the stopped data dir except what catchup's MariaDB instance never archives "
        "(`MariaDBReplica.is_archived`: replication state and runtime leftovers) and the "
        "sandbox source's binary logs (catchup's replica runs without them); the redo log "
        "`ib_logfile0` is shrunk before every shutdown as catchup does "
        "(`shrink_redo_and_stop`, `mariadb.archive_redo_log_mb`, "
        f"{f['redo_log_bytes'] / MIB:.0f} MiB). On the final skewed data dir: {f['files']} "
        f"files, {f['bytes'] / GIB:.2f} GiB (InnoDB and Aria files, `ib_buffer_pool`, the "
        f"system schemas); left out: {left} ({f['left_out_bytes'] / GIB:.2f} GiB)."
    )


def how_to_read(results: dict, figures: dict) -> list[str]:
    parts = ["**How to read these numbers.**"]
    sweep = results.get("sweep_rows")
    if sweep:
        by = {r["chunking"]: r for r in sweep}
        small, mine, big = by["fixed 16 KiB"], by["fixed 256 KiB"], by["fixed 1 MiB"]
        parts.append(
            f"Chunk size: in the sweep below, 256 KiB chunks make a skewed round "
            f"{mine['skewed_new_zstd_ratio']:.4f} of the data dir new after zstd, against "
            f"{small['skewed_new_zstd_ratio']:.4f} for 16 KiB (InnoDB's page) and "
            f"{big['skewed_new_zstd_ratio']:.4f} for 1 MiB, with {mine['chunks']:,} chunks to "
            f"index instead of {small['chunks']:,}; FastCDC gains nothing on files rewritten "
            "in place, page by page, and hashes slower."
        )
    xb = figures["xb_chain_total_gib"]
    f3 = figures["format3_total_gib_skewed"]
    parts.append(
        f"The mariadb-backup chain stores {'less' if xb < f3 else 'more'} ({xb:.2f} GiB "
        f"against {f3:.2f} GiB for format 3 on the same skewed cycles): an incremental "
        "holds the changed 16 KiB pages, where "
        "one changed page makes a whole 256 KiB chunk new, and only the redo written "
        "during its run. What the difference buys: every format 3 backup is a full backup, "
        "restorable on its own, while the chain must be restored through from its full "
        "backup, and none of its middle links can be dropped."
    )
    uniform = steady(results["uniform"]["records"])
    per_round = [r["new_stored_bytes"] / r["data_bytes"] for r in uniform]
    parts.append(
        f"Uniform updates of 1 % of the rows dirty most 256 KiB chunks they touch: each "
        f"cycle stores {min(per_round):.2f} to {max(per_round):.2f} of the data dir anew "
        f"(after zstd), against {figures['stored_new_ratio_skewed']:.3f} (median) for the "
        "skewed workload, whose changes cluster in recent pages."
    )
    if "repack_share_at_most_skewed" in figures:
        parts.append(
            "`chunks.repack_below` (0.5) stores again the chunks a backup still needs from "
            "packs its parent uses less than half of; from the manifests' `packs` (used "
            "and size of each), that is at most "
            f"{figures['repack_share_at_most_skewed']:.0%} of the skewed cycles' new stored "
            f"bytes and at most {figures['repack_share_at_most_uniform']:.0%} of the "
            "uniform ones' (at most: the sum of what each parent used of its sparse packs, "
            "some of which the cycle changed anyway)."
        )
    return [" ".join(parts)]


def markdown(results: dict, figures: dict) -> str:
    skewed, uniform = results["skewed"], results["uniform"]
    f2_measured = sorted(r["cycle"] for r in skewed["records"] if "format2_bytes" in r)
    storage = [
        ("format 3, skewed", "format3_total_gib_skewed"),
        ("format 3, uniform", "format3_total_gib_uniform"),
        ("format 2 (a full zstd copy per backup)", "format2_total_gib"),
        ("mariadb-backup full + `--incremental` chain, zstd -1 (skewed)", "xb_chain_total_gib"),
    ]
    lines = [
        "## Deduplicated backups (repository format 3)",
        "",
        f"`bench/dedup.py` ({results['date']}, {results['machine']}; "
        f"{results['seconds'] / 60:.0f} minutes): a sandbox MariaDB with the demo schema, "
        f"data dir {skewed['records'][0]['data_bytes'] / GIB:.2f} GiB at cycle 0, "
        f"{figures['data_gib']:.2f} GiB after the skewed run; {figures['cycles']} cycles of "
        f"the skewed workload and {len(uniform['records']) - 1} of the uniform one, "
        "each changing 1 % of the rows of the large tables (20-row transactions, 4 clients), "
        "then a clean shutdown and catchup's backup step of the stopped data dir (format 3, "
        f"{results['chunk_kib']} KiB chunks, zstd -1, encrypted with a key file, "
        f"{results['jobs']} jobs, in a child process of its own).",
        "",
        file_set_text(skewed),
        "",
        "- **skewed**: half the change is new rows appended (orders with their items, "
        "customers, documents; all of event_log's share), half is updates of random rows "
        "among the most recent 5 % (the hot set);",
        "- **uniform**: updates of random rows across all rows of orders (with their items), "
        "customers and documents.",
        "",
        "| figure | value | goal |",
        "|---|---:|---|",
        *figure_rows(figures),
        "",
        "Steady cycle: the median of cycles 2 and later (the first round after the bulk load "
        "touches pages nothing had rewritten yet).",
        "",
        *([*timing_text(results["timing"], figures["cycles"]), ""] if "timing" in results else []),
        "Single timings at the end of each run, on its final data dir, right after "
        "catchup's backup step of it:",
        "",
        f"- {baseline_text('Skewed', skewed)}",
        f"- {baseline_text('Uniform', uniform)}",
        "",
        f"Storage after {figures['cycles']} cycles (cycle 0 is the first full backup):",
        "",
        "| method | total stored |",
        "|---|---:|",
        *[f"| {label} | {figures[key]:.2f} GiB |" for label, key in storage],
        "",
        f"Format 2 was measured at cycles {', '.join(map(str, f2_measured))} of the skewed run "
        "(a full backup each) and interpolated linearly in between. The mariadb-backup chain "
        "ran on the skewed workload, on the running server before each shutdown "
        "(`--stream=xbstream --extra-lsndir`, `--incremental-basedir` the previous one). "
        "Neither copies a binlog; mariadb-backup copies only the redo log written during "
        "its run and, for an incremental, only the pages changed since the previous one; "
        "a restore must apply the whole chain in order (`--prepare` of the full, then of "
        "each incremental).",
        "",
        *how_to_read(results, figures),
        "",
        "![stored bytes per cycle](img/dedup-storage.png)",
        "",
        "<details><summary>Per cycle, skewed</summary>",
        "",
        *cycle_table(skewed),
        "",
        "</details>",
        "",
        "<details><summary>Per cycle, uniform</summary>",
        "",
        *cycle_table(uniform),
        "",
        "</details>",
        "",
        "Reproduce: `.venv/bin/python bench/dedup.py` (the chunk-size sweep that chose the "
        "chunk size: `--sweep`).",
    ]
    return "\n".join(lines)
