"""Every engine has the same shape: the same files, paired names, and a replica
that is provisioned for the engine's own source (no source argument to get wrong).
The demo's sandboxes live outside the production engines."""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from pathlib import Path

import pytest

from catchup.engines.registry import engine_for
from tests.conftest import REPO

PACKAGE = REPO / "src" / "catchup"
ENGINES = {"mariadb": "MariaDB", "mysql": "MySQL", "postgres": "Postgres"}
SHARED_FILES = {
    "__init__.py",  # wires the Engine, nothing more
    "source.py",  # <Engine>Source: what a cycle asks of the source
    "server.py",  # <Engine>Server: a private server process
    "instance.py",  # <Engine>Instance and <Engine>Replica
    "bootstrap.py",
    "catchup.py",
    "restore.py",
    "verify.py",
}
MAX_LINES = 450


@pytest.mark.parametrize("name", ENGINES)
def test_every_engine_has_the_same_files(name: str) -> None:
    files = {path.name for path in (PACKAGE / "engines" / name).glob("*.py")}
    assert files >= SHARED_FILES
    wiring = (PACKAGE / "engines" / name / "__init__.py").read_text().splitlines()
    assert len(wiring) <= 60, f"{name}/__init__.py should only wire the engine"


def test_no_engine_or_demo_module_is_over_the_limit() -> None:
    modules = [*(PACKAGE / "engines").rglob("*.py"), *(PACKAGE / "demo").rglob("*.py")]
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in modules
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert modules and not long


@pytest.mark.parametrize(("name", "prefix"), ENGINES.items())
def test_engine_names_pair_up(name: str, prefix: str) -> None:
    package = f"catchup.engines.{name}"
    source = getattr(importlib.import_module(f"{package}.source"), f"{prefix}Source")
    instance = importlib.import_module(f"{package}.instance")
    server = getattr(importlib.import_module(f"{package}.server"), f"{prefix}Server")
    engine = engine_for(name)
    assert type(engine).__name__ == f"{prefix}Engine" and engine.name == name
    assert inspect.isclass(server)
    assert inspect.isclass(getattr(instance, f"{prefix}Instance"))
    # The cycle hands the engine its own source; the replica keeps it.
    hints = typing.get_type_hints(type(engine).provision)
    assert hints["source"] is source
    assert hints["return"].__args__[0] is getattr(instance, f"{prefix}Replica")


@pytest.mark.parametrize("prefix", ENGINES.values())
def test_a_replica_takes_no_source_of_unknown_type(prefix: str) -> None:
    module = importlib.import_module(f"catchup.engines.{prefix.lower()}.instance")
    replica = getattr(module, f"{prefix}Replica")
    assert list(inspect.signature(replica.bootstrap).parameters) == ["self", "cancel", "progress"]
    assert list(inspect.signature(replica.catch_up).parameters) == [
        "self",
        "checkpoint",
        "cancel",
        "progress",
        "archived",  # the log archive's files, replayed first (Replica.catch_up)
    ]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_production_engines_hold_no_demo_fixture() -> None:
    engine_files = list((PACKAGE / "engines").rglob("*.py"))
    assert not [p for p in engine_files if p.stem == "sandbox"]
    assert not [
        p for p in engine_files if any(m.startswith("catchup.demo") for m in imported_modules(p))
    ]


def test_the_demo_drives_sandboxes_through_their_interface() -> None:
    from catchup.demo.mariadb import MariaDBSandbox
    from catchup.demo.postgres import PostgresSandbox
    from catchup.demo.sandbox import Sandbox

    members = [n for n, v in vars(Sandbox).items() if callable(v) or isinstance(v, property)]
    members = [n for n in members if not n.startswith("_")]
    assert "apply_workload" in members and "load_demo_data" in members
    for sandbox in (MariaDBSandbox, PostgresSandbox):
        assert not [n for n in members if not hasattr(sandbox, n)], sandbox
        assert engine_for(sandbox.engine).name == sandbox.engine
    run = (PACKAGE / "demo" / "run.py").read_text()
    calls = [
        node.func.id
        for node in ast.walk(ast.parse(run))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert "getattr" not in calls
