"""The set-up contract: `make` asks apt only for packages whose binaries are
missing, so a machine with Node.js from NodeSource (npm inside, conflicting with
Debian's npm package) installs cleanly; `make demo` needs no Node at all; CI
removes the database packages so that the install step is proven on every run."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "install-missing"


def make_variable(name: str) -> list[str]:
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s*:=(.*)$", text, re.M)
    assert match, f"Makefile has no {name}"
    return [word.strip("'") for word in match.group(1).split()]


def run_install(tmp_path: Path, present: list[str], pairs: list[str]) -> list[str]:
    """Run the script with only `present` binaries (and a recording apt-get) on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    for name in present:
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    apt.chmod(0o755)
    for tool in ("sh", "ls", "head", "id"):
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    # sudo is never needed: the stub apt-get accepts any uid
    sudo = bin_dir / "sudo"
    sudo.write_text('#!/bin/sh\nexec "$@"\n')
    sudo.chmod(0o755)
    subprocess.run(
        [str(bin_dir / "sh"), str(SCRIPT), *pairs],
        check=True,
        env={"PATH": str(bin_dir)},
        capture_output=True,
    )
    if not log.exists():
        return []
    installs = [line for line in log.read_text().splitlines() if "install" in line.split()]
    return [word for line in installs for word in line.split() if not word.startswith("-")][1:]


def test_nodesource_node_with_its_npm_asks_apt_for_neither(tmp_path: Path) -> None:
    asked = run_install(tmp_path, ["node", "npm"], make_variable("TEST_PACKAGES")[:2])
    assert asked == []


def test_only_missing_packages_are_asked_for_once(tmp_path: Path) -> None:
    pairs = make_variable("DEMO_PACKAGES")
    asked = run_install(tmp_path, ["zstd", "setpriv", "mariadb", "mariadb-dump"], pairs)
    # The PostgreSQL server binary lives outside PATH; on this fake root it is missing.
    postgres_missing = not list(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    expected = ["mariadb-server"] + (["postgresql"] if postgres_missing else [])
    assert asked == expected


def test_nothing_missing_runs_no_apt(tmp_path: Path) -> None:
    assert run_install(tmp_path, ["zstd"], ["zstd=zstd"]) == []


def test_demo_needs_no_node() -> None:
    demo = " ".join(make_variable("DEMO_PACKAGES"))
    assert "node" not in demo and "npm" not in demo
    text = (REPO / "Makefile").read_text()
    demo_rule = re.search(r"^demo:(.*)$", text, re.M)
    assert demo_rule and "test-tools" not in demo_rule.group(1)


def test_ci_removes_database_packages_before_make_test() -> None:
    script = (REPO / ".ci" / "run").read_text()
    remove = script.index("apt-get remove")
    run = script.rindex("\nmake test")
    assert remove < run
    for package in ("mariadb-server", "mariadb-client", "postgresql-15"):
        assert package in script[remove:run]
    assert os.access(REPO / "tools" / "install-missing", os.X_OK)
