"""Which worker holds which reserved task, filed beside kombu's own record of it.

Kombu's Redis transport knows a reserved task only by when it was reserved
(``unacked_index``), not by who holds it. A worker that dies without closing (SIGKILL, the
OOM killer, a lost machine) takes the tasks it was running, and those waiting in its prefetch
buffer, with it, and kombu's sweep brings them back only once they are older than the
visibility timeout (45 s by default). So a worker also files each tag it reserves under its
own *incarnation* (one per worker process lifetime: a restarted worker is a new one), and
takes the tag out when the task is acked; ``worker.dead_workers`` puts a dead incarnation's
tasks back in their queues within seconds.

The filing rides in kombu's own transactions (``transport.QoS``) and in the round trip by
which a task acknowledges itself (``acks``): no round trip of its own. Only a worker's
processes file (``begin`` runs in the worker's main process before its pool forks, so the
pool's processes share the incarnation); everywhere else these functions queue nothing.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from rest_consumer.state import keys

_incarnation: list[str] = []
"""This worker's incarnation, once ``begin`` has run (empty elsewhere)."""


def begin(node: str) -> str:
    """Start filing under a new incarnation (``node``: the worker's name, for the logs)."""
    _incarnation[:] = [f"{node}:{os.getpid()}:{uuid.uuid4().hex[:12]}"]
    return _incarnation[0]


def end() -> None:
    """Stop filing (a worker that stopped; tests)."""
    _incarnation.clear()


def incarnation() -> str | None:
    """This process's incarnation; None outside a filing worker."""
    return _incarnation[0] if _incarnation else None


def queue_held(pipe: Any, tag: str) -> None:
    """Queue the filing of a reserved task's tag (on kombu's unacked-record transaction)."""
    if _incarnation:
        pipe.sadd(keys.worker_held(_incarnation[0]), tag)


def queue_released(pipe: Any, tag: str) -> None:
    """Queue the tag's removal from this worker's file (with the removal of its record)."""
    if _incarnation:
        pipe.srem(keys.worker_held(_incarnation[0]), tag)
