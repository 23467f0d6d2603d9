"""The docs say what the code does: the layer map names every file, the repository
format its current versions and engines, and every document a comment cites exists."""

from __future__ import annotations

import re

from catchup.engines.registry import ENGINES
from catchup.repository.envelope import VERSION
from catchup.repository.manifest import FORMAT_VERSION
from tests.conftest import REPO

SOURCE = REPO / "src" / "catchup"
FILE = re.compile(r"^[\w.-]+\.(py|html)$")


def mapped_files(text: str) -> list[str]:
    """The files the layer map lists, as paths below src/catchup.

    A name ending in "/" opens a directory at its column; a file belongs to the
    deepest directory opened at a column left of its own. Descriptions are ignored."""
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    files: list[str] = []
    opened: list[tuple[int, str]] = []  # (column, directory)
    for line in block.splitlines():
        for match in re.finditer(r"\S+", line):
            column, name = match.start(), match.group()
            if name.endswith("/"):
                opened = [(c, d) for c, d in opened if c < column] + [(column, name)]
                continue
            if FILE.match(name):
                opened = [(c, d) for c, d in opened if c < column]
                files.append("".join(d for _, d in opened) + name)
            break  # after the file: its description
    return files


def test_the_layer_map_lists_every_source_file_once() -> None:
    listed = mapped_files((REPO / "docs" / "architecture.md").read_text())
    present = {
        path.relative_to(SOURCE).as_posix()
        for path in SOURCE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "engines/mariadb/gtid.py" in listed and "daemon/executors/kubernetes/job.py" in listed
    assert sorted(present - set(listed)) == [], "files missing from the map"
    assert sorted(set(listed) - present) == [], "the map lists files that do not exist"
    assert len(listed) == len(set(listed)), "a file is listed twice"


def test_the_repository_format_states_the_current_versions_and_every_engine() -> None:
    text = (REPO / "docs" / "repository-format.md").read_text()
    assert f"envelope version {VERSION}" in text.splitlines()[0]
    assert f"manifest format {FORMAT_VERSION}" in text.splitlines()[0]
    [row] = [line for line in text.splitlines() if line.startswith("| `engine`")]
    assert all(f"`{name}`" in row for name in ENGINES), row


def test_every_document_the_source_cites_exists() -> None:
    cited = {
        (path.relative_to(REPO), name)
        for path in SOURCE.rglob("*.py")
        for name in re.findall(r"[\w./-]+\.md\b", path.read_text())
    }
    assert cited, "the source cites no document: the pattern is wrong"
    missing = [(str(path), name) for path, name in sorted(cited) if not (REPO / name).exists()]
    assert missing == []
