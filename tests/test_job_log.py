"""Jobs in the compacted topic ``<prefix>.jobs``, on real Kafka and Redis: every change is
written there first, and Redis's copy is rebuilt from it after Redis loses its data."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
import redis
from confluent_kafka.admin import AdminClient, ConfigResource

from conftest import LOOPBACK, valid_job
from rest_consumer.core.config import Settings
from rest_consumer.state.joblog import JobLog
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app

AUTH = {"Authorization": "Bearer tok-0123456789abcdef"}


@pytest.fixture
def kafka_settings(settings: Settings, redis_url: str, kafka_bootstrap: str) -> Settings:
    return replace(settings, redis_url=redis_url, kafka_bootstrap_servers=kafka_bootstrap,
                   consumer_group_prefix=f"t{uuid.uuid4().hex[:8]}",
                   destination_allowlist=LOOPBACK)


@pytest.fixture
def store(kafka_settings: Settings, real_redis: redis.Redis) -> JobStore:
    return JobStore.for_settings(real_redis, kafka_settings)


def test_every_change_reaches_the_compacted_topic(store: JobStore,
                                                  kafka_settings: Settings) -> None:
    store.upsert("a", valid_job(id="a"))
    store.upsert("b", valid_job(id="b", owner="bob"))
    store.set_enabled("b", False)
    store.upsert("c", valid_job(id="c"))
    store.delete("c")
    assert store.log is not None
    logged = store.log.read()
    assert sorted(logged) == ["a", "b"]
    assert logged["b"] == store.get("b") and logged["b"]["enabled"] is False
    admin = AdminClient({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers})
    resource = ConfigResource("topic", f"{kafka_settings.consumer_group_prefix}.jobs")
    config = admin.describe_configs([resource])[resource].result(10)
    assert config["cleanup.policy"].value == "compact"


def test_redis_is_rebuilt_from_the_topic_stopped_jobs_included(store: JobStore,
                                                               real_redis: redis.Redis) -> None:
    store.upsert("running", valid_job(id="running"))
    store.upsert("stopped", valid_job(id="stopped", owner="bob", token="tok-kept"))
    store.set_enabled("stopped", False)
    before = {job["id"]: job for job in store.list()}
    real_redis.flushall()
    assert store.list() == []
    assert store.ensure_loaded() == 2
    assert {job["id"]: job for job in store.list()} == before
    assert [j["id"] for j in store.list("bob")] == ["stopped"]  # indexes rebuilt too
    assert store.ensure_loaded() == 0  # once


def test_jobs_only_redis_knew_are_written_to_the_topic(kafka_settings: Settings,
                                                       real_redis: redis.Redis) -> None:
    JobStore(real_redis, LOOPBACK).upsert("older", valid_job(id="older"))  # no topic then
    store = JobStore.for_settings(real_redis, kafka_settings)
    store.ensure_loaded()
    assert store.log is not None and list(store.log.read()) == ["older"]


def test_the_api_rebuilds_the_jobs_after_redis_lost_them(store: JobStore,
                                                         kafka_settings: Settings,
                                                         real_redis: redis.Redis) -> None:
    client = create_app(kafka_settings, store=store, kafka_ready=lambda: None,
                        dispatch=lambda job, groups: None).test_client()
    assert client.post("/job/x", json=valid_job(id="x"), headers=AUTH).status_code == 201
    client.post("/job/x/stop", headers=AUTH)
    real_redis.flushall()
    jobs = client.get("/jobs", headers=AUTH).json
    assert [(j["id"], j["enabled"]) for j in jobs] == [("x", False)]


def test_a_change_kafka_refuses_is_not_made(kafka_settings: Settings,
                                            real_redis: redis.Redis) -> None:
    # A broker address where nothing listens: the write is refused, Redis keeps the old job
    good = JobStore.for_settings(real_redis, kafka_settings)
    good.upsert("kept", valid_job(id="kept"))
    dead = JobLog({"bootstrap.servers": "127.0.0.1:1"}, "t-dead")
    client = create_app(kafka_settings, store=JobStore(real_redis, LOOPBACK, dead),
                        kafka_ready=lambda: None, dispatch=lambda job, groups: None,
                        load_files=False).test_client()
    answer = client.post("/job/kept", json=valid_job(id="kept", owner="mallory"), headers=AUTH)
    assert answer.status_code == 503 and answer.json["error"] == "Kafka is unavailable"
    assert good.get("kept")["owner"] == "alice"


def test_deleted_jobs_stay_deleted_after_a_rebuild(store: JobStore,
                                                   real_redis: redis.Redis) -> None:
    store.upsert("gone", valid_job(id="gone"))
    store.delete("gone")
    real_redis.flushall()
    store.ensure_loaded()
    assert store.find("gone") is None
    assert store.list() == []

