"""schemathesis fuzzes the daemon's API from its served OpenAPI spec: no input,
authenticated or not, may produce a 5xx. The daemon is real (local executor,
local repository); its one shard points at a closed port, so triggered cycles
run the real code path and fail fast instead of backing anything up."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error

from catchup.config import parse_config
from catchup.daemon.api import create_app
from catchup.daemon.service import Daemon
from catchup.repository import open_repository

TOKEN = "fuzz-token-0123456789abcdef"


# Built at import: schemathesis reads the spec when it collects the test.
ROOT = Path(tempfile.mkdtemp(prefix="cu-fuzz-"))
CONFIG = parse_config(
    tomllib.loads(
        f'repository = "{ROOT}/repo"\nwork_dir = "{ROOT}/work"\n'
        '[schedule]\ncron = "*/5 * * * *"\nwindow = "22:00-06:00"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "-80"\nsource = "127.0.0.1:1"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "80-"\nsource = "127.0.0.1:1"\n'
    )
)
DAEMON = Daemon(CONFIG, open_repository(CONFIG))
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(DAEMON, SecretStr(TOKEN)))


@pytest.fixture(scope="module", autouse=True)
def running_daemon():
    DAEMON.start()
    yield
    DAEMON.stop(abandon=True, timeout=30)
    shutil.rmtree(ROOT, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail_with_a_server_error(case):
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {}):
        case.call_and_validate(headers=headers, checks=[not_a_server_error])
