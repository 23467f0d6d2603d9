"""Ctrl-C and SIGTERM for commands that run cycles or instances."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from catchup.cancel import CancelToken
from catchup.cli.output import err


@contextmanager
def cancellable() -> Iterator[CancelToken]:
    """SIGINT/SIGTERM cancel the run; cycles unwind through their cleanup."""
    token = CancelToken()

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if token.cancelled:
            err.print(f"{name} again: still cleaning up ephemeral instances, please wait")
        token.cancel(f"received {name}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield token
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
