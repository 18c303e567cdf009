"""Shared fixtures: real Redis and Kafka for the session (started by the project's own code
unless REDIS_URL and KAFKA_BOOTSTRAP_SERVERS are set), fakeredis for unit tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from rest_consumer.core.config import Settings
from rest_consumer.core.destinations import Allowlist
from rest_consumer.devtools.services import KafkaBroker, RedisServer

FIXTURES = Path(__file__).parent / "fixtures"
LOOPBACK = Allowlist.parse(("127.0.0.0/8",))
"""Test endpoints listen on loopback, which only a network entry allows."""


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: REDIS_URL when set, else Debian's redis-server started here (or fail)."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka: KAFKA_BOOTSTRAP_SERVERS when set, else a local KRaft broker (or fail)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the real Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for an API with both kinds of credentials and an empty jobs directory."""
    return Settings(api_user="admin", api_password="s3cret-admin",
                    api_token="tok-0123456789abcdef", jobs_dir=tmp_path / "jobs")


@pytest.fixture
def kafka_settings(settings: Settings, redis_url: str, kafka_bootstrap: str) -> Settings:
    """``settings`` on the real services, with a prefix (topics, groups) of its own."""
    return replace(settings, redis_url=redis_url, kafka_bootstrap_servers=kafka_bootstrap,
                   consumer_group_prefix=f"t{uuid.uuid4().hex[:8]}")


def valid_job(**overrides: Any) -> dict[str, Any]:
    """A minimal valid job document; overrides replace or add fields."""
    job: dict[str, Any] = {
        "id": "people",
        "owner": "alice",
        "type": "POST",
        "topic": ["aether.Person"],
        "datamap": {"id": "$.msg.id", "name": "$.msg.name", "schema_name": "$.schema.name"},
        "url": "http://api.example.org/people/{id}",
        "json_body": ["id", "name"],
        "query_params": ["schema_name"],
    }
    job.update(overrides)
    return job


@pytest.fixture(params=["fakeredis", "real-redis"])
def any_redis(request: pytest.FixtureRequest) -> Any:
    """Runs a test twice: on fakeredis (fast, unit) and on the real Redis (integration)."""
    if request.param == "fakeredis":
        return fakeredis.FakeRedis()
    return request.getfixturevalue("real_redis")


@pytest.fixture
def endpoint() -> Iterator[Any]:
    from endpoint import RecordingEndpoint

    server = RecordingEndpoint().start()
    yield server
    server.stop()


@pytest.fixture
def pipeline(redis_url: str, kafka_bootstrap: str, real_redis: redis.Redis,
             tmp_path: Path) -> Iterator[Any]:
    """Reader and worker processes (started by the test) against the real services."""
    from pipeline import Pipeline

    pipe = Pipeline(redis_url, kafka_bootstrap, tmp_path)
    yield pipe
    pipe.stop_all()
