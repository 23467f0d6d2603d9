"""The CLI loads only what the command run needs: the daemon (uvicorn, FastAPI, the
Kubernetes client), the demo sandboxes and the cloud SDKs stay out of `catchup list`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

HEAVY = ("uvicorn", "fastapi", "catchup.demo", "catchup.daemon", "boto3", "kubernetes")

# Runs the app in a fresh interpreter (this one has imported everything the suite has),
# then names the heavy modules it loaded.
PROBE = """
import json, sys
from catchup.cli import app
outputs = []
for args in json.loads(sys.argv[1]):
    try:
        app(args, prog_name="catchup")
    except SystemExit as exit:
        assert exit.code in (0, None), (args, exit.code)
heavy = json.loads(sys.argv[2])
loaded = sorted(
    m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy)
)
print(json.dumps(loaded))
"""


def loaded_after(*runs: list[str]) -> tuple[list[str], str]:
    """The heavy modules loaded after running `catchup ARGS` for each run, and the output."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(runs)), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    *output, last = result.stdout.strip().splitlines()
    return json.loads(last), "\n".join(output)


def test_help_loads_no_daemon_demo_or_cloud_sdk():
    loaded, output = loaded_after(["--help"], ["list", "--help"])
    assert "Usage: catchup list" in output  # the probe really ran both
    assert loaded == []


@pytest.mark.parametrize("command", ["list", "prune", "keygen"])
def test_running_a_command_loads_no_daemon_demo_or_cloud_sdk(tmp_path: Path, command: str):
    """Not only the help: the command's own code path, on a local repository."""
    config = tmp_path / "catchup.toml"
    config.write_text(
        f'repository = "{tmp_path / "repo"}"\nwork_dir = "{tmp_path / "work"}"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "a"\nsource = "127.0.0.1:1"\n'
    )
    args = {
        "list": ["list", "-c", str(config), "--json"],
        "prune": ["prune", "-c", str(config), "--dry-run", "--json"],
        "keygen": ["keygen", str(tmp_path / "key"), "--json"],
    }[command]
    loaded, output = loaded_after(args)
    assert output.startswith(("[", "{")), output  # the command ran and printed its JSON
    assert loaded == []
