"""The benchmark scripts stay small and runnable: each concern of the source-impact
benchmark in a module of its own (bench/impact/), helpers shared with pipeline.py in
bench/benchlib.py, and both scripts start."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_module_size import LIMIT, module_sizes

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_no_bench_module_is_over_450_lines() -> None:
    sizes = module_sizes(BENCH)
    assert "impact/measure.py" in sizes and "source_impact.py" in sizes
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}


@pytest.mark.parametrize(
    "script", ["source_impact.py", "pipeline.py", "mariadb_replay.py", "archive.py"]
)
def test_the_bench_scripts_start(script: str) -> None:
    """--help imports every module the script needs, from any working directory."""
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--workdir" in result.stdout


def test_a_report_section_replaces_only_its_own_markers(tmp_path: Path, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("benchlib", BENCH / "benchlib.py")
    assert spec and spec.loader
    benchlib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchlib)
    doc = tmp_path / "benchmarks.md"
    monkeypatch.setattr(benchlib, "DOC", doc)
    doc.write_text("# Benchmarks\n\nintro\n<!-- a:begin -->\nold a\n<!-- a:end -->\ntail\n")
    benchlib.write_section("<!-- a:begin -->", "<!-- a:end -->", "new a\n")
    benchlib.write_section("<!-- b:begin -->", "<!-- b:end -->", "b\n")
    benchlib.write_section("<!-- b:begin -->", "<!-- b:end -->", "b again\n")
    assert doc.read_text() == (
        "# Benchmarks\n\nintro\n<!-- a:begin -->\nnew a\n<!-- a:end -->\ntail\n\n"
        "<!-- b:begin -->\nb again\n<!-- b:end -->\n"
    )


def fake_engine(engine: str, lags: list[float], cpu: tuple[float, float, float]) -> dict:
    """One engine's results as bench/archive.py records them, with made-up numbers."""
    none, archiver, replica = cpu
    window = {"cpu_seconds": none, "commits": 3000, "seconds": 60}
    lag = {"markers": len(lags), "unarchived": 0, "p50": lags[len(lags) // 2], "p99": max(lags)}
    return {
        "engine": engine,
        "size_mb": 100,
        "rate": 50,
        "fraction": 0.01,
        "cpu_none": window,
        "cpu_replica": {**window, "cpu_seconds": replica},
        "cpu_archiver": {**window, "cpu_seconds": archiver, "lag": {**lag, "max": max(lags)}},
        "lag_flush1": {**window, "lag": {**lag, "p50": 0.9, "p99": 1.0}, "series": []},
        "with_archiver": {"delta_log_bytes": 4_000_000, "bytes_from_source": 2_000},
        "without_archiver": {"delta_log_bytes": 4_000_000, "bytes_from_source": 3_000_000},
        "pitrs": [
            {
                "label": "a delta",
                "catchup": {"seconds": 4.0, "log_files": 2, "log_bytes": 5 << 20},
                "manual": {"seconds": 6.0, "log_bytes": 5 << 20, "equal_to_source": True},
            },
            {"label": "more", "catchup": {"error": "boom"}, "manual": {"seconds": 1.0}},
        ],
    }


def test_the_archive_report_computes_the_ratios_and_judges_the_goals(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    from archive_parts.report import BEGIN, figures, goals, report_markdown

    good = fake_engine("mariadb", [3.0, 4.0, 5.0, 6.0], (10.0, 10.5, 10.4))
    slow = fake_engine("postgres", [3.0, 9.0, 12.0], (10.0, 12.0, 10.5))
    f = figures(good)
    assert f["cpu_ratio"] == pytest.approx(0.5 / 0.4)
    assert f["with_archiver_fraction"] == pytest.approx(0.0005)
    assert f["without_archiver_fraction"] == pytest.approx(0.75)
    assert f["pitr_ratios"] == [pytest.approx(1.5)]  # a failed restore has no ratio
    assert goals(f) == {"lag": True, "cpu": True, "bytes": True}
    assert goals(figures(slow)) == {"lag": False, "cpu": False, "bytes": True}
    text = report_markdown(
        {"date": "2026-12-03", "machine": "2 cores", "window": 60, "engines": [good, slow]},
        "What it shows.",
    )
    assert BEGIN not in text  # write_section adds the markers
    assert "| MariaDB | archive lag p50 / p99 / max" in text
    assert "archiver ÷ replica **1.25**" in text and "archiver ÷ replica **4.00**" in text
    assert "= **1.50**" in text and "**0.05%**" in text
    assert "(more) | failed: boom | **missed** |" in text
    assert text.count("**missed**") == 4 and text.rstrip().endswith("What it shows.")


def test_the_archive_bench_takes_its_sizes_as_flags(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_archive", BENCH / "archive.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--engines", "postgres", "--size-mb", "50", "--window", "30"])
    assert (args.engines, args.size_mb, args.window, args.ref_window) == (["postgres"], 50, 30, 30)
    defaults = bench.parse_args([])
    assert defaults.engines == ["mariadb", "postgres"] and defaults.window >= 60
    with pytest.raises(SystemExit):
        bench.parse_args(["--engines", "mysql"])


def fake_cost(method: str, sent: int, cpu: float, **extra: float) -> dict:
    """One method's row as bench/impact/measure.py's Cost records it, made-up numbers."""
    steps = {"step bootstrap": 30.0, "step stop": 3.0, "step precheck": 0.01}
    return {
        "method": method,
        "source_bytes": sent,
        "source_cpu_seconds": cpu,
        "source_read_bytes": sent,
        "wall_seconds": 40.0,
        "backup_bytes": 100 << 20,
        "extra": {**steps, **extra},
    }


def test_the_mysql_section_compares_the_catch_up_with_mysqldump_and_clone(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    from impact.report import MYSQL_BEGIN, mysql_headline, mysql_markdown

    delta = {
        "fraction": 0.01,
        "binlog_bytes": 4 << 20,
        "rows_changed": 5000,
        "bytes_vs_binlog": 0.5,
    }
    mysql = {
        "size_mb": 500,
        "data_bytes": 600 << 20,
        "innodb_bytes": 800 << 20,
        "server_version": "9.7.4",
        "mysqld_version": "mysqld Ver 9.7.4",
        "bootstrap": [fake_cost("clone", 800 << 20, 2.0), fake_cost("dump", 700 << 20, 8.0)],
        "steady": [fake_cost("steady", 2 << 20, 0.1, **delta)] * 2,
        "full": [fake_cost("mysqldump", 700 << 20, 10.0), fake_cost("CLONE", 800 << 20, 2.0)],
    }
    h = mysql_headline(mysql)
    assert h["mysql_cpu_ratio_vs_mysqldump"] == pytest.approx(0.01)
    assert h["mysql_cpu_ratio_vs_clone"] == pytest.approx(0.05)
    assert h["mysql_bytes_ratio_vs_clone"] == pytest.approx(2 / 800, abs=1e-4)
    assert h["mysql_dump_vs_clone_bootstrap_cpu"] == pytest.approx(4.0)
    text = mysql_markdown({"date": "2026-12-03", "machine": "2 cores", "mysql": mysql}, h)
    assert MYSQL_BEGIN not in text  # write_section adds the markers
    assert "| source CPU s | 2.00 | 8.00 | 4.00 |" in text
    assert "| bootstrap step s |" in text and "precheck" not in text  # steps that took time
    assert "1.0% of its CPU" in text and "5.0% of its CPU" in text
