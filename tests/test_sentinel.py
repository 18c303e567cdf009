"""Redis Sentinel: the URL form every Redis client takes, and the pipeline following a failover
of the primary (SIGKILL) with a real Sentinel group, Kafka, reader and worker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from test_pipeline import simple_job

from conftest import LOOPBACK
from helpers import wait_for
from rest_consumer.core import redisconn
from rest_consumer.core.config import from_env
from rest_consumer.core.errors import ConfigError
from rest_consumer.devtools.sentinel_group import SentinelGroup
from rest_consumer.state.store import JobStore


def test_a_sentinel_url_names_the_sentinels_and_the_masters_password_and_database() -> None:
    url = "sentinel://:p%40ss@s1:26380/2;sentinel://s2;sentinel://s3:26390"
    assert redisconn.parse_sentinels(url) == (
        [("s1", 26380), ("s2", 26379), ("s3", 26390)], "p@ss", 2)
    assert redisconn.is_sentinel(url) and not redisconn.is_sentinel("redis://h:6379/0")


@pytest.mark.parametrize(("url", "problem"), [
    ("sentinel://:pw@s1:26379;redis://s2:6379", "address 2 must look like sentinel://"),
    ("sentinel://s1:notaport", "invalid port"),
    ("sentinel://s1:26379/zero", "must be a number"),
])
def test_a_wrong_sentinel_url_is_a_clear_error(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        redisconn.parse_sentinels(url)


def test_settings_make_clients_of_either_kind() -> None:
    plain = from_env({"REDIS_URL": "redis://127.0.0.1:1/3"}).redis_client()
    assert plain.connection_pool.connection_kwargs["db"] == 3
    settings = from_env({"REDIS_URL": "sentinel://127.0.0.1:1", "REDIS_SENTINEL_MASTER": "m2"})
    assert settings.redis_client().connection_pool.service_name == "m2"  # type: ignore[attr-defined]


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    sentinels = SentinelGroup(tmp_path / "sentinel").start()
    yield sentinels
    sentinels.stop()


@pytest.fixture
def sentinel_pipeline(group: SentinelGroup, kafka_bootstrap: str, tmp_path: Path) -> Iterator[Any]:
    from pipeline import Pipeline

    pipe = Pipeline(group.url, kafka_bootstrap, tmp_path)
    yield pipe
    pipe.stop_all()


def test_the_pipeline_follows_a_failover_of_the_redis_primary_and_loses_nothing(
        group: SentinelGroup, sentinel_pipeline: Any, endpoint: Any) -> None:
    # Given a job running on a Sentinel group (REDIS_URL and the broker are sentinel://)
    pipeline = sentinel_pipeline
    topic = "sentinel.people"
    pipeline.create_topic(topic)
    client = redisconn.connect(group.url, socket_timeout=2)
    JobStore(client, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader()
    values = [json.dumps({"id": f"p{i}", "name": "n"}).encode() for i in range(200)]
    pipeline.produce(topic, values[:100])
    wait_for(lambda: len(endpoint.keys()) == 100, 60, what="the first 100 delivered")
    # When the primary is killed, and more data arrives meanwhile
    before = group.master_port()
    assert before is not None
    group.kill_primary()
    pipeline.produce(topic, values[100:])
    failover_s = group.wait_for_failover(before)
    started = time.monotonic()
    # Then the pipeline follows the promoted replica without an operator: nothing lost
    wait_for(lambda: len({r.json()["id"] for r in endpoint.received}) == 200, 120,
             interval=0.5, what="all 200 delivered after the failover")
    absorbed_s = time.monotonic() - started
    print(f"failover {failover_s:.1f} s, all delivered {absorbed_s:.1f} s later")
    assert _still_answers(client)


def _still_answers(client: redis.Redis) -> bool:
    return bool(wait_for(lambda: client.ping(), 30, what="the client on the new primary"))
