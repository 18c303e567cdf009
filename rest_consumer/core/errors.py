"""One tree of exceptions; each carries the data a caller needs to report it."""

from __future__ import annotations

from typing import Any


class RestConsumerError(Exception):
    """Root of every error raised by rest-consumer."""


class ConfigError(RestConsumerError):
    """Raised when a setting from the environment is missing or malformed."""


class ServiceError(RestConsumerError):
    """Raised when a local service (Redis, Kafka) cannot be started or reached."""


class ValidationError(RestConsumerError):
    """Raised when a document sent to the API is invalid; ``problems`` lists every issue
    with its field."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems))
        self.problems = problems


class JobValidationError(ValidationError):
    """Raised when a job document is invalid."""


class UserNotFound(RestConsumerError):
    """Raised when a name names no stored user."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no user named {name!r}")
        self.name = name


class JobNotFound(RestConsumerError):
    """Raised when a job id names no stored job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class DecodeError(RestConsumerError):
    """Raised when a Kafka message value cannot be decoded."""


class MappingError(RestConsumerError):
    """Raised when a decoded record cannot be turned into a request."""


class DeliveryError(RestConsumerError):
    """Base of the errors raised while sending a request."""

    def __init__(self, reason: str, status: int | None = None, excerpt: str = "",
                 body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.excerpt = excerpt
        self.body = body
        """The answer's body as read (for ``responses``); empty when there was none."""


class RetryableDeliveryError(DeliveryError):
    """Raised when a request failed in a way worth retrying (5xx, 429, timeout, refused)."""

    def __init__(
        self, reason: str, status: int | None = None, excerpt: str = "",
        retry_after: float | None = None, body: bytes = b"",
    ) -> None:
        super().__init__(reason, status, excerpt, body)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Raised when a request failed in a way that retrying cannot fix (e.g. 400)."""


class Throttled(RestConsumerError):
    """Raised when a job's rate limit asks for a longer wait than a worker slot should hold."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"rate limited for {wait:.1f}s")
        self.wait = wait
