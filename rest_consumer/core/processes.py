"""Process lifetime: waiting for SIGINT or SIGTERM, and dying with the parent process."""

from __future__ import annotations

import ctypes
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


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In the child: ask Linux to send ``sig`` when the parent dies, so nothing is left
    behind."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, sig)  # PR_SET_PDEATHSIG
