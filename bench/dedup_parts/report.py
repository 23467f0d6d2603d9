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
            "peak_rss_mib": round(max(figures["peak_rss_mib"], timing["peak_rss_mib"]), 1),
        }
    return figures


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
        ("peak RSS of catchup's backup or restore, MiB", "peak_rss_mib", ""),
    ]
    return [f"| {label} | {f[key]:g} | {goal} |" for label, key, goal in rows if key in f]


def timing_text(timing: dict, cycles: int) -> list[str]:
    def seconds(key: str) -> str:
        return ", ".join(f"{s:.1f}" for s in timing[key]) + " s"

    load = " → ".join(f"{x:.1f}" for x in timing["load_average_1min"])
    same = "identical to" if timing["restore_identical"] else "NOT IDENTICAL to"
    return [
        f"Speed, on one more skewed cycle (cycle {cycles + 1}, "
        f"{timing['step_new_stored_mib']:.0f} MiB new), each pair timed {timing['rounds']} "
        "times back to back in alternating order, page cache warm; the ratios above use the "
        "fastest of each (other work shared this 2-core machine: 1-minute load average "
        f"{load}):",
        "",
        f"- `tar -c | zstd -1 -T0` ({timing['tar_zstd_bytes'] / GIB:.2f} GiB): "
        f"{seconds('tar_zstd_seconds')}; catchup's backup step (into a fresh copy of the "
        f"run's repository each time): {seconds('step_seconds')};",
        f"- `zstd -d | tar -x`: {seconds('untar_seconds')}; catchup's restore: "
        f"{seconds('restore_seconds')} (restored tree {same} the data dir).",
    ]


def baseline_text(name: str, run: dict) -> str:
    b, last = run["baselines"], run["records"][-1]
    same = "identical to" if b["restore_identical"] else "NOT IDENTICAL to"
    return (
        f"{name}: `tar | zstd` {b['tar_zstd_seconds']:.1f} s ({b['tar_zstd_bytes'] / GIB:.2f} GiB)"
        f" vs the backup step {last['seconds']:.1f} s; `zstd -d | tar -x` "
        f"{b['untar_seconds']:.1f} s vs catchup's restore {b['restore_seconds']:.1f} s "
        f"(restored tree {same} the data dir)."
    )


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
        "It is not the same content: catchup stores the whole data dir, binlogs included "
        f"(the base's binlog of the bulk load alone is {results['base_binlog_bytes'] / GIB:.2f} "
        "GiB, plus each cycle's), while mariadb-backup copies no binlog, only the redo log "
        "written during its run, and for an incremental only the pages changed since the "
        "previous one; a restore must apply the whole chain in order (`--prepare` of the "
        "full, then of each incremental).",
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
