"""Cooperative cancellation: SIGINT/SIGTERM set a token; long waits check it, so
every cycle unwinds through its cleanup instead of dying mid-step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from catchup.errors import Cancelled


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._children: set[CancelToken] = set()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        with self._lock:
            if not self._event.is_set():
                self.reason = reason
            self._event.set()
            children = list(self._children)
        for child in children:
            child.cancel(reason)

    @contextmanager
    def child(self) -> Iterator[CancelToken]:
        """A token cancelled with this one, and on its own without cancelling this one."""
        child = CancelToken()
        with self._lock:
            self._children.add(child)
        if self.cancelled:
            child.cancel(self.reason)
        try:
            yield child
        finally:
            with self._lock:
                self._children.discard(child)

    @contextmanager
    def limited(self, seconds: float, reason: str) -> Iterator[CancelToken]:
        """A token cancelled with this one, or by itself after `seconds`."""
        with self.child() as child:
            timer = threading.Timer(seconds, child.cancel, (reason,))
            timer.daemon = True
            timer.start()
            try:
                yield child
            finally:
                timer.cancel()

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
