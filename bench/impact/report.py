"""The report of a run: headline figures, the plot, and the markdown section of
docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

from benchlib import IMG

BEGIN, END = "<!-- source-impact:begin -->", "<!-- source-impact:end -->"


def headline(r: dict) -> dict:
    steady = {c["extra"]["fraction"]: c for c in r["main"]["steady"]}
    one = steady.get(0.01) or next(iter(steady.values()))
    dump = next(c for c in r["main"]["full"] if c["method"].startswith("mariadb-dump"))
    parallel = {row["shards"]: row for row in r["parallel"]["rows"]}
    top = parallel[max(parallel)]
    return {
        "bytes_ratio_vs_binlog": round(one["extra"]["bytes_vs_binlog"], 3),
        "cpu_ratio_vs_dump": round(one["source_cpu_seconds"] / dump["source_cpu_seconds"], 4),
        "zero_delta_seconds": round(r["zero_delta"]["seconds"], 2),
        "apply_rate_ratio": round(one["extra"]["apply_rate_ratio"], 2),
        f"parallel{top['shards']}_speedup": round(top["speedup"], 2),
        "parallel8_speedup": round(parallel.get(8, top)["speedup"], 2),
    }


def plot(r: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steady = r["main"]["steady"]
    fractions = [c["extra"]["fraction"] * 100 for c in steady]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in (
        (axes[0], "source_bytes", "bytes the source sent"),
        (axes[1], "source_cpu_seconds", "source CPU seconds"),
    ):
        ax.plot(fractions, [c[key] for c in steady], "o-", lw=2.5, label="catchup cycle")
        flat = [r["main"]["bootstrap"], *r["main"]["full"]]
        for cost in flat:
            ax.plot(fractions, [cost[key]] * len(fractions), "--", label=cost["method"])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows changed since the last backup (%)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, loc="center right")
    size = r["main"]["data_bytes"] / (1 << 30)
    fig.suptitle(f"What one backup costs a {size:.1f} GiB MariaDB source")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / "source-impact.png"
    fig.savefig(path, dpi=110)
    return path


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cell(text: str) -> str:
    """A table cell: a method's pipe would end it."""
    return text.replace("|", "\\|")


def cost_rows(costs: list[dict], reference: dict) -> list[str]:
    rows = []
    for c in costs:
        ratio_bytes = c["source_bytes"] / max(1, reference["source_bytes"])
        ratio_cpu = c["source_cpu_seconds"] / max(1e-9, reference["source_cpu_seconds"])
        rows.append(
            f"| {cell(c['method'])} | {fmt_bytes(c['source_bytes'])} "
            f"| {c['source_cpu_seconds']:.2f} "
            f"| {fmt_bytes(c['source_read_bytes'])} | {c['wall_seconds']:.1f} "
            f"| {fmt_bytes(c['backup_bytes'])} | {ratio_bytes:,.1f} | {ratio_cpu:,.1f} |"
        )
    return rows


HEADER = [
    "| method | source sent | source CPU s | source disk reads | wall s | backup size "
    "| bytes ÷ catchup | CPU ÷ catchup |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
]


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value <= target
    return "met" if met else "**missed**"


def report_markdown(r: dict, h: dict) -> str:
    main = r["main"]
    steady = main["steady"]
    one = next((c for c in steady if c["extra"]["fraction"] == 0.01), steady[0])
    lines = [
        f"## Source impact (`bench/source_impact.py`, {r['date']})",
        "",
        f"Machine: {r['machine']}. Source: one sandbox {main['server_version']} primary, "
        f"{fmt_bytes(main['data_bytes'])} of tables (the demo schema), ROW binlogs, "
        f"`slave_compressed_protocol` on the ephemeral replica. Page caches dropped before "
        "each measurement; the source's CPU and disk reads are sampled from /proc for its "
        "process tree. Bytes sent are counted by a relay between the source and the client.",
        "",
        "### Every method at 1 % of rows changed",
        "",
        *HEADER,
        *cost_rows([one, main["bootstrap"], *main["full"]], one),
        "",
        "The full-backup tools were measured once: what they cost does not depend on how "
        "much changed. mariadb-backup runs on the source host, so its own CPU and reads "
        "count, and its compressed stream is what must leave the host.",
        "",
        "### catchup's steady state by changed fraction",
        "",
        "| rows changed | binlog of the delta | source sent | sent ÷ binlog | source CPU s "
        "| CPU ÷ dump | catch-up apply rate ÷ write rate | cycle s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    dump = next(c for c in main["full"] if c["method"].startswith("mariadb-dump"))
    for c in steady:
        e = c["extra"]
        cpu_vs_dump = c["source_cpu_seconds"] / dump["source_cpu_seconds"]
        lines.append(
            f"| {e['fraction']:.1%} ({e['rows_changed']:,.0f} rows) "
            f"| {fmt_bytes(e['binlog_bytes'])} | {fmt_bytes(c['source_bytes'])} "
            f"| {e['bytes_vs_binlog']:.2f} | {c['source_cpu_seconds']:.2f} | {cpu_vs_dump:.1%} "
            f"| {e['apply_rate_ratio']:.1f} | {e['cycle']:.1f} |"
        )
    z = r["zero_delta"]
    lines += [
        "",
        "![Source bytes and CPU per backup vs changed fraction](img/source-impact.png)",
        "",
        f"Zero-delta cycle on a {z['size_mb']:g} MB shard ({fmt_bytes(z['data_bytes'])} data "
        f"dir): median {z['seconds']:.1f} s of {len(z['all_seconds'])} "
        f"({', '.join(f'{s:.1f}' for s in z['all_seconds'])}), "
        f"{fmt_bytes(z['bytes_from_source'])} from the source. Steps: "
        + ", ".join(f"{k} {v:.2f}" for k, v in z["durations"].items())
        + ".",
        "",
        f"### Shards at once ({r['parallel']['size_mb']:g} MB each, 1 % changed)",
        "",
        "| shards | wall s | per-shard s | aggregate MiB/s of backups | speedup vs 1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in r["parallel"]["rows"]:
        lines.append(
            f"| {row['shards']} | {row['wall_seconds']:.1f} | {row['per_shard_seconds']:.1f} "
            f"| {row['throughput_mib_s']:.1f} | {row['speedup']:.2f} |"
        )
    if r.get("postgres"):
        pg = r["postgres"]
        steady_pg = pg["costs"][1]
        lines += [
            "",
            f"### PostgreSQL ({pg['size_mb']:g} MB of pgbench data, `wal_compression=zstd`)",
            "",
            *HEADER,
            *cost_rows(pg["costs"], steady_pg),
        ]
    lines += [
        "",
        "### Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        f"| bytes sent per steady cycle ≤ 0.8 x binlog of the delta (1 %) "
        f"| {h['bytes_ratio_vs_binlog']:.2f} | {verdict(h['bytes_ratio_vs_binlog'], 0.8, False)} |",
        f"| source CPU per catch-up ≤ 5 % of a full mariadb-dump's (1 %) "
        f"| {h['cpu_ratio_vs_dump']:.1%} | {verdict(h['cpu_ratio_vs_dump'], 0.05, False)} |",
        f"| zero-delta cycle on a 200 MB shard ≤ 10 s | {h['zero_delta_seconds']:.1f} s "
        f"| {verdict(h['zero_delta_seconds'], 10, False)} |",
        f"| catch-up apply rate ≥ 3 x the workload's write rate (1 %) "
        f"| {h['apply_rate_ratio']:.1f} | {verdict(h['apply_rate_ratio'], 3, True)} |",
        f"| 8 shards at once ≥ 1.6 x one shard's throughput | {h['parallel8_speedup']:.2f} "
        f"| {verdict(h['parallel8_speedup'], 1.6, True)} |",
    ]
    return "\n".join(lines) + "\n"


MYSQL_BEGIN, MYSQL_END = "<!-- source-impact-mysql:begin -->", "<!-- source-impact-mysql:end -->"


def mysql_headline(m: dict) -> dict:
    """The steady-state catch-up (after the CLONE bootstrap) against the two full copies."""
    steady = m["steady"][0]
    dump, clone = m["full"]
    clone_boot, dump_boot = m["bootstrap"]

    def ratio(cost: dict, reference: dict, key: str) -> float:
        return round(cost[key] / max(1e-9, reference[key]), 4)

    return {
        "mysql_bytes_ratio_vs_mysqldump": ratio(steady, dump, "source_bytes"),
        "mysql_cpu_ratio_vs_mysqldump": ratio(steady, dump, "source_cpu_seconds"),
        "mysql_bytes_ratio_vs_clone": ratio(steady, clone, "source_bytes"),
        "mysql_cpu_ratio_vs_clone": ratio(steady, clone, "source_cpu_seconds"),
        "mysql_bytes_vs_binlog": round(steady["extra"]["bytes_vs_binlog"], 3),
        "mysql_dump_vs_clone_bootstrap_wall": ratio(dump_boot, clone_boot, "wall_seconds"),
        "mysql_dump_vs_clone_bootstrap_cpu": ratio(dump_boot, clone_boot, "source_cpu_seconds"),
    }


def bootstrap_rows(clone: dict, dump: dict) -> list[str]:
    """The two bootstraps side by side: the source's costs, each step of the cycle."""
    steps = [  # the steps that took time
        k
        for k in clone["extra"]
        if k.startswith("step ") and max(clone["extra"][k], dump["extra"].get(k, 0.0)) >= 0.5
    ]
    measures = [
        ("source sent", clone["source_bytes"], dump["source_bytes"], fmt_bytes),
        ("source CPU s", clone["source_cpu_seconds"], dump["source_cpu_seconds"], "{:.2f}".format),
        ("source disk reads", clone["source_read_bytes"], dump["source_read_bytes"], fmt_bytes),
        *[
            (f"{k[5:]} step s", clone["extra"][k], dump["extra"].get(k, 0.0), "{:.1f}".format)
            for k in steps
        ],
        ("whole cycle s", clone["wall_seconds"], dump["wall_seconds"], "{:.1f}".format),
        ("backup size", clone["backup_bytes"], dump["backup_bytes"], fmt_bytes),
    ]
    return [
        f"| {label} | {text(a)} | {text(b)} | {b / a if a else float('nan'):.2f} |"
        for label, a, b, text in measures
    ]


def mysql_markdown(r: dict, h: dict) -> str:
    m = r["mysql"]
    steady, boot, full = m["steady"], m["bootstrap"], m["full"]
    one = steady[0]
    clone_boot, dump_boot = boot
    e = one["extra"]
    lines = [
        f"## Source impact: MySQL (`bench/source_impact.py --only mysql`, {r['date']})",
        "",
        f"Machine: {r['machine']}. Source: one sandbox MySQL primary, `{m['mysqld_version']}` "
        f"(`SELECT VERSION()`: {m['server_version']}), {fmt_bytes(m['data_bytes'])} of tables "
        f"(the demo schema, `--mysql-mb {m['size_mb']:g}`; "
        f"a {fmt_bytes(m['innodb_bytes'])} data dir without its binlogs: system, undo and redo "
        "files included), ROW binlogs, GTIDs, the clone "
        "plugin loaded; zstd on the ephemeral replica's replication stream "
        "(`mysql.compress_replication`), TLS wherever the client offers it (all methods). "
        "Page caches dropped before each measurement; the source's CPU and disk reads are "
        "sampled from /proc for its process tree. Bytes sent are counted by a relay between "
        "the source and the client.",
        "",
        f"The workload changed {e['fraction']:.0%} of the rows of every large table "
        f"({e['rows_changed']:,.0f} rows, {fmt_bytes(e['binlog_bytes'])} of binlog) between "
        "the bootstraps and the steady-state cycles. Each bootstrap method has its own shard "
        "(same source, same repository), so both were caught up.",
        "",
        f"### Every method ({e['fraction']:.0%} of rows changed)",
        "",
        *HEADER,
        *cost_rows([*steady, *boot, *full], one),
        "",
        "mysqldump and the raw CLONE were measured once, after the workload: what they cost "
        "does not depend on how much changed. The raw CLONE is what a clone-based tool "
        "copies at every backup; its backup size is the uncompressed data dir it wrote. "
        "catchup stores a compressed data dir (the backup size column of its rows).",
        "",
        "### Bootstrap: CLONE vs mysqldump (inside catchup)",
        "",
        "| | `clone` | `dump` | dump ÷ clone |",
        "| --- | --- | --- | --- |",
        *bootstrap_rows(clone_boot, dump_boot),
        "",
        "### Headline",
        "",
        f"A steady-state catch-up at {e['fraction']:.0%} of rows changed made the source send "
        f"{fmt_bytes(one['source_bytes'])} ({h['mysql_bytes_vs_binlog']:.2f} x the delta's "
        f"binlog) and spend {one['source_cpu_seconds']:.2f} s of CPU: "
        f"**{h['mysql_bytes_ratio_vs_mysqldump']:.2%} of mysqldump's bytes and "
        f"{h['mysql_cpu_ratio_vs_mysqldump']:.1%} of its CPU**; "
        f"**{h['mysql_bytes_ratio_vs_clone']:.2%} of a CLONE's bytes and "
        f"{h['mysql_cpu_ratio_vs_clone']:.1%} of its CPU**.",
    ]
    return "\n".join(lines) + "\n"
