from __future__ import annotations

import pytest

from catchup.engines.environment import child_environment


def test_secrets_do_not_reach_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
    monkeypatch.setenv("CATCHUP_API_TOKEN", "tok")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = child_environment(PGPASSFILE="/x")
    assert "AWS_SECRET_ACCESS_KEY" not in env and "CATCHUP_API_TOKEN" not in env
    assert env["LC_ALL"] == "C.UTF-8" and env["PGPASSFILE"] == "/x" and env["PATH"]
