"""No module of src/catchup over 450 lines: a file that long holds several concepts."""

from __future__ import annotations

from pathlib import Path

import catchup

SOURCE = Path(catchup.__file__).parent
LIMIT = 450


def module_sizes(root: Path) -> dict[str, int]:
    """The line count of each Python module under `root`, by its path relative to it."""
    return {
        path.relative_to(root).as_posix(): len(path.read_text().splitlines())
        for path in root.rglob("*.py")
    }


def test_no_module_is_over_450_lines() -> None:
    sizes = module_sizes(SOURCE)
    assert "config/__init__.py" in sizes and "repository/catalog.py" in sizes
    over = {name: n for name, n in sizes.items() if n > LIMIT}
    assert over == {}
