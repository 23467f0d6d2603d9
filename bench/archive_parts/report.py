"""The archive run's report: the ratios the issue asks for, per engine, the plot of
the lag over time, and the markdown section of docs/benchmarks.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchlib import IMG

BEGIN, END = "<!-- archive:begin -->", "<!-- archive:end -->"
NAMES = {"mariadb": "MariaDB", "postgres": "PostgreSQL"}
LAG_GOAL, BYTES_GOAL = 10.0, 0.01
# CPU seconds a whole-tree difference must exceed to mean anything: a 60 s window of the
# same load varies by about this much between runs (0.01 s ticks, background work).
NOISE = 0.1


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def figures(e: dict[str, Any]) -> dict[str, Any]:
    """One engine's headline numbers."""
    none = e["cpu_none"]["cpu_seconds"]
    archiver = e["cpu_archiver"]["cpu_seconds"] - none
    replica = e["cpu_replica"]["cpu_seconds"] - none
    lag = e["cpu_archiver"]["lag"]
    out: dict[str, Any] = {
        "lag_p50": lag["p50"],
        "lag_p99": lag["p99"],
        "lag_max": lag["max"],
        "lag_markers": lag["markers"],
        "lag_unarchived": lag["unarchived"],
        "lag1_p50": e["lag_flush1"]["lag"]["p50"],
        "lag1_p99": e["lag_flush1"]["lag"]["p99"],
        "cpu_none": none,
        "cpu_archiver_extra": archiver,
        "cpu_replica_extra": replica,
        # Below the noise the difference of differences is no ratio at all.
        "cpu_ratio": ratio(archiver, replica) if replica > NOISE else math.nan,
    }
    sender_a = e["cpu_archiver"].get("sender_cpu_seconds", 0.0)
    sender_b = e["cpu_replica"].get("sender_cpu_seconds", 0.0)
    if sender_a and sender_b:
        out["sender_cpu"] = (sender_a, sender_b, ratio(sender_a, sender_b))
    for key in ("with_archiver", "without_archiver"):
        cycle = e.get(key)
        if cycle:
            out[f"{key}_fraction"] = ratio(cycle["bytes_from_source"], cycle["delta_log_bytes"])
    out["pitr_ratios"] = [
        ratio(p["manual"]["seconds"], p["catchup"]["seconds"])
        for p in pitrs(e)
        if "seconds" in p.get("catchup", {}) and "seconds" in p.get("manual", {})
    ]
    return out


def pitrs(e: dict[str, Any]) -> list[dict[str, Any]]:
    return e.get("pitrs") or ([e["pitr"]] if "pitr" in e else [])


def goals(f: dict[str, Any]) -> dict[str, bool]:
    return {
        "lag": f["lag_p99"] <= LAG_GOAL and not f["lag_unarchived"],
        # "The load of one extra replica": an upper bound; 1.5 leaves room for the noise.
        # Where the tree's difference is noise, the walsender's own CPU decides.
        "cpu": f["cpu_ratio"] <= 1.5
        if not math.isnan(f["cpu_ratio"])
        else "sender_cpu" in f and f["sender_cpu"][2] <= 1.5,
        "bytes": f.get("with_archiver_fraction", math.inf) < BYTES_GOAL,
    }


CPU_GOAL = "(≤ 1.5: a replica's load, within this run's noise)"


def mib(n: float) -> str:
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.2f} MiB"


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def engine_rows(e: dict[str, Any]) -> list[str]:
    f, g = figures(e), goals(figures(e))
    name = NAMES.get(e["engine"], e["engine"])
    with_a, without = e.get("with_archiver", {}), e.get("without_archiver", {})
    rows = [
        f"| {name} | archive lag p50 / p99 / max, flush 5 s (goal p99 ≤ 10 s) "
        f"| {f['lag_p50']:.2f} / {f['lag_p99']:.2f} / {f['lag_max']:.2f} s "
        f"({f['lag_markers']} markers) | {mark(g['lag'])} |",
        f"| {name} | archive lag p50 / p99, flush 1 s (reference) "
        f"| {f['lag1_p50']:.2f} / {f['lag1_p99']:.2f} s | — |",
        f"| {name} | source CPU over the window: none / +archiver / +idle replica "
        f"| {f['cpu_none']:.2f} s / {f['cpu_archiver_extra']:+.2f} s / "
        f"{f['cpu_replica_extra']:+.2f} s; archiver ÷ replica "
        + (
            f"**{f['cpu_ratio']:.2f}** "
            if not math.isnan(f["cpu_ratio"])
            else f"n/a (the replica's difference is under the ±{NOISE:g} s noise) "
        )
        + f"| {mark(g['cpu'])} (≤ 1.5: a replica's load, within this run's noise) |",
    ]
    if "sender_cpu" in f:
        a, b, r = f["sender_cpu"]
        rows.append(
            f"| {name} | CPU of the walsender alone: archiver's / standby's "
            f"| {a:.2f} s / {b:.2f} s = **{r:.2f}** | {mark(r <= 1.5)} {CPU_GOAL} |"
        )
    if with_a:
        rows.append(
            f"| {name} | source bytes of a cycle after a {e['fraction']:.0%} delta, archiver "
            f"on (goal < 1 % of the delta's log) | {mib(with_a['bytes_from_source'])} of "
            f"{mib(with_a['delta_log_bytes'])} = **{f['with_archiver_fraction']:.2%}** "
            f"| {mark(g['bytes'])} |"
        )
    if without:
        rows.append(
            f"| {name} | the same cycle, no archiver | {mib(without['bytes_from_source'])} "
            f"of {mib(without['delta_log_bytes'])} = {f['without_archiver_fraction']:.2%} | — |"
        )
    for pitr in pitrs(e):
        ours, manual = pitr.get("catchup", {}), pitr.get("manual", {})
        what = f"PITR end to end, manual ÷ catchup ({pitr.get('label', 'log')})"
        if "seconds" in ours and "seconds" in manual:
            rows.append(
                f"| {name} | {what} | {manual['seconds']:.1f} s ÷ {ours['seconds']:.1f} s = "
                f"**{ratio(manual['seconds'], ours['seconds']):.2f}** "
                f"({mib(ours['log_bytes'])} of log in {ours['log_files']} files; the "
                f"manual result equals the source then: {manual['equal_to_source']}) | — |"
            )
        else:
            problem = ours.get("error") or manual.get("error") or "not run"
            rows.append(f"| {name} | {what} | failed: {problem[:200]} | **missed** |")
    return rows


def plot(results: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    for e in results["engines"]:
        name = NAMES.get(e["engine"], e["engine"])
        for key, style, label in (
            ("cpu_archiver", "-", "flush 5 s"),
            ("lag_flush1", ":", "flush 1 s"),
        ):
            series = e[key].get("series", [])
            ax.plot(
                [t for t, _ in series],
                [lag for _, lag in series],
                style,
                marker="o" if e["engine"] == "mariadb" else "x",  # the two saw-teeth overlap
                ms=3,
                alpha=0.8,
                label=f"{name}, {label}",
            )
    ax.axhline(LAG_GOAL, color="grey", lw=1, ls="--", label="goal (p99)")
    ax.set_xlabel("seconds into the steady write load")
    ax.set_ylabel("marker's archive lag (s)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.suptitle("Archive lag: commit → held by the repository (local directory)")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / "archive-lag.png"
    fig.savefig(path, dpi=110)
    return path


def report_markdown(results: dict[str, Any], notes: str = "") -> str:
    engines = results["engines"]
    first = engines[0] if engines else {}
    lines = [
        "## The log archive: lag, source load, catch-up bytes, point-in-time restore",
        "",
        f"`make bench-archive` ({results['date']}, {results['machine']}; "
        f"{first.get('size_mb', 0):g} MB shards, a steady writer of "
        f"{first.get('rate', 0):g} small transactions/s with one marker a second, "
        f"{results['window']:g} s windows, the repository a local directory).",
        "",
        "| engine | measure | result | goal |",
        "|---|---|---|---|",
    ]
    for e in engines:
        lines += engine_rows(e)
    lines += [
        "",
        "How: a marker's lag is from its commit returning to the archiver's status first "
        "holding its position (GTID / LSN), polled every 20 ms. Source CPU is the server's "
        "process tree (bench/impact/measure.py) over the same write load, with the archiver "
        "streaming, with one idle replica streaming instead (MariaDB: a replica sandbox; "
        "PostgreSQL: a streaming physical standby), and with neither; the ratio is "
        "(archiver - none) ÷ (replica - none). The manual restore is `catchup restore` of "
        "the same base backup, a stock server on it, then `mariadb-binlog "
        "--start-position … --stop-datetime … | mariadb` or `restore_command = 'cp DIR/%f "
        "%p'` with `recovery_target_time`, until it serves, the log files already in a "
        "local directory (not timed); catchup's is `catchup restore --to-time` end to end.",
        "",
        "![archive lag](img/archive-lag.png)",
    ]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"
