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


MYSQL_SCRIPT = REPO / "tools" / "install-mysql"


def stub_tools(bin_dir: Path, apt_exit: int) -> Path:
    """A PATH with the shell tools the script uses and an apt-get that records its calls
    and exits with `apt_exit`."""
    bin_dir.mkdir()
    log = bin_dir.parent / "apt.log"
    for tool in ("sh", "awk", "rm", "mkdir", "mv", "cat", "chmod", "touch", "dirname", "id"):
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit {apt_exit}\n')
    apt.chmod(0o755)
    return log


def test_install_mysql_leaves_a_complete_install_alone(tmp_path: Path) -> None:
    log = stub_tools(tmp_path / "bin", apt_exit=1)
    target = tmp_path / "mysql"
    (target / "bin").mkdir(parents=True)
    mysqld = target / "bin" / "mysqld"
    mysqld.write_text("#!/bin/sh\necho 'mysqld  Ver 9.7.4'\n")
    mysqld.chmod(0o755)
    (target / ".installed").touch()
    env = {"PATH": str(tmp_path / "bin")}
    subprocess.run(["sh", str(MYSQL_SCRIPT), str(target)], check=True, env=env)
    assert not log.exists(), "apt was asked although MySQL is installed"


def test_install_mysql_fails_with_one_clear_line_when_the_download_fails(tmp_path: Path) -> None:
    log = stub_tools(tmp_path / "bin", apt_exit=100)
    target = tmp_path / "mysql"
    env = {"PATH": str(tmp_path / "bin")}
    result = subprocess.run(
        ["sh", str(MYSQL_SCRIPT), str(target)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "sid) failed; check the network or the mirror, or set mysql.binaries" in result.stderr
    assert "Dir::Etc::sourceparts=-" in log.read_text(), "the system's own sources stay unused"
    assert not target.exists() and not os.path.exists("/etc/apt/sources.list.d/catchup.list")
