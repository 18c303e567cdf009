"""The Celery ceiling: rest-consumer's own Celery settings draining no-op tasks."""

from __future__ import annotations

from typing import Any

from rest_consumer.broker.celery_app import create_celery
from rest_consumer.core import config

app = create_celery(config.from_env())


@app.task(name="ceiling.noop", acks_late=True)
def noop(job_id: str, job_hash: str, messages: list[dict[str, Any]]) -> None:
    """Same arguments as ``deliver``; does nothing."""
