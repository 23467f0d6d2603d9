"""One name, one meaning (issue 13): no class or type alias name is defined by two
modules of src/catchup, and a restore target that is in use is its own error, not
a missing backup."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import catchup
from catchup.errors import ExitCode, NotFoundError, TargetNotEmptyError, UsageError
from catchup.repository import Repository
from catchup.storage.local import LocalStore
from tests.conftest import run_cli
from tests.unit.test_repository import make_data_dir, write

SOURCE = Path(catchup.__file__).parent


def defined_names(root: Path) -> dict[str, list[str]]:
    """Module-level classes and capitalised assignments (type aliases), by name."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [target.id for target in node.targets if isinstance(target, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                continue
            for name in names:
                if name[:1].isupper() and not name.isupper():  # not a constant
                    found[name].append(path.relative_to(root).as_posix())
    return found


def test_no_two_modules_define_the_same_class_or_alias_name() -> None:
    repeated = {name: paths for name, paths in defined_names(SOURCE).items() if len(paths) > 1}
    assert repeated == {}


def test_a_used_restore_target_is_a_usage_error_with_exit_code_2(tmp_path: Path) -> None:
    repo = Repository(LocalStore(tmp_path / "repo"))
    manifest = write(repo, make_data_dir(tmp_path))
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(TargetNotEmptyError) as caught:
        repo.restore(manifest, target, jobs=1)
    assert isinstance(caught.value, UsageError) and not isinstance(caught.value, NotFoundError)
    assert caught.value.exit_code == ExitCode.USAGE

    config = tmp_path / "catchup.toml"
    config.write_text(
        f'repository = "{tmp_path / "repo"}"\nwork_dir = "{tmp_path / "work"}"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "0"\nsource = "127.0.0.1:1"\n'
    )
    for used in (target, target / "keep.txt"):
        result = run_cli("-c", str(config), "restore", "ks/0", "--target-dir", str(used))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        what = "dir '{}' is not empty" if used == target else "'{}' is not a directory"
        assert f"target {what.format(used)}; give an empty or new dir" in result.stderr
    assert (target / "keep.txt").read_text() == "mine"
