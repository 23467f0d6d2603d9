"""Retries and the deadline, the same wherever a cycle runs, so a shard behaves
alike under every executor: a failed attempt gets `executor.retries` more, and
all attempts together stop at `executor.deadline_minutes`. The local executor
applies them itself; a Kubernetes Job gets the same numbers (`backoffLimit`,
`activeDeadlineSeconds`). A failure says how many attempts failed, in the same
words everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from catchup.config import Config


@dataclass(frozen=True)
class Attempts:
    retries: int  # more attempts after a failed one
    retry_delay_seconds: float  # between attempts, where catchup retries itself
    deadline_minutes: float  # for all attempts together

    @classmethod
    def of(cls, config: Config) -> Attempts:
        settings = config.executor
        return cls(settings.retries, settings.retry_delay_seconds, settings.deadline_minutes)

    @property
    def most(self) -> int:
        return self.retries + 1

    @property
    def deadline_seconds(self) -> float:
        return self.deadline_minutes * 60

    @property
    def deadline_exceeded(self) -> str:
        return f"deadline of {self.deadline_minutes:g} min exceeded"


def failed_after(attempts: int) -> str:
    return f"failed after {attempts} attempt{'s' * (attempts != 1)}"
