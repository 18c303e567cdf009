"""The Celery app and the fast path to its Redis broker: publishing ``deliver`` tasks in one
round trip, the kombu transport, the task acknowledgement that carries a task's outcomes.
``transport``, ``acks``, ``publishing`` and ``roundtrip`` use private APIs of kombu, Celery
and redis-py; each is pinned by a contract test."""
