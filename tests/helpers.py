"""Helpers for tests that run the real command line in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "rest_consumer"]


def spawn(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    """Start ``rest-consumer <args>`` with the test's environment plus ``env``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([*CLI, *args], env=full_env, cwd=kw.pop("cwd", REPO), text=True,
                            **kw)


def wait_for(condition: Callable[[], Any], timeout: float = 30, interval: float = 0.1,
             what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - not ready yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop(proc: subprocess.Popen[str], timeout: float = 20) -> int:
    """SIGTERM and wait; SIGKILL (and fail the caller's check) if it does not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9
    return proc.returncode
