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


@pytest.mark.parametrize("script", ["source_impact.py", "pipeline.py", "mariadb_replay.py"])
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
