"""No module of src/catchup over 450 lines: a file that long holds several concepts."""

from __future__ import annotations

from pathlib import Path

import catchup

SOURCE = Path(catchup.__file__).parent
LIMIT = 450


def test_no_module_is_over_450_lines() -> None:
    sizes = {
        path.relative_to(SOURCE).as_posix(): len(path.read_text().splitlines())
        for path in SOURCE.rglob("*.py")
    }
    assert "config/__init__.py" in sizes and "repository/catalog.py" in sizes
    over = {name: n for name, n in sizes.items() if n > LIMIT}
    assert over == {}
