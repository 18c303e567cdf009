"""Waiting for SIGINT or SIGTERM in a process that also runs threads."""

from __future__ import annotations

import signal
import threading

POLL_SECONDS = 0.5


def wait_until_signalled() -> None:
    """Block until SIGINT or SIGTERM.

    Waits in short slices: the kernel may deliver the signal to any thread, and Python runs
    its handler only when the main thread next executes bytecode. A main thread blocked in an
    endless ``Event.wait()`` would never get there (seen in CI: Ctrl-C of ``dev`` ignored
    until something else woke it)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(POLL_SECONDS):
        pass
