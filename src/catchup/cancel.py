"""Cooperative cancellation: SIGINT/SIGTERM set a token; long waits check it, so
every cycle unwinds through its cleanup instead of dying mid-step.
"""

from __future__ import annotations

import threading

from catchup.errors import Cancelled


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(f"cancelled: {self.reason}")

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up and raise at once when cancelled."""
        if self._event.wait(seconds):
            self.check()


NEVER = CancelToken()
