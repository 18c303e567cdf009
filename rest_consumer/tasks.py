"""Where ``celery -A rest_consumer.tasks worker|flower`` finds the app and its ``deliver`` task.

A thin door: the app and the task live in ``rest_consumer.worker.task``.
"""

from rest_consumer.worker.task import app, deliver

__all__ = ["app", "deliver"]
