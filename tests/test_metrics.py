"""Metrics written by workers to Redis and rendered by the API."""

from __future__ import annotations

from typing import Any

from conftest import valid_job
from rest_consumer.core.config import Settings
from rest_consumer.state import heartbeat
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app
from rest_consumer.worker.outcomes import TaskOutcomes


def test_metrics_render_counters_gauges_and_the_latency_histogram(settings: Settings,
                                                                  any_redis: Any) -> None:
    store = JobStore(any_redis)
    store.upsert("people", valid_job(token="tok-metrics"))
    out = TaskOutcomes("people")
    out.count("delivered", 7)
    out.count("retried", 2)
    for seconds in (0.004, 0.2, 0.3):
        out.observe_latency(seconds)
    pipe = any_redis.pipeline()
    out.write(pipe)
    pipe.execute()
    pipe = any_redis.pipeline()
    heartbeat.beat(pipe, "people", "reader-1", heartbeat.Heartbeat("h", in_flight=3))
    pipe.execute()
    client = create_app(settings, store=store, kafka_ready=lambda: None).test_client()
    assert client.get("/metrics").status_code == 401
    bearer = {"Authorization": "Bearer tok-0123456789abcdef"}
    text = client.get("/metrics", headers=bearer).data.decode()
    assert 'rest_consumer_messages_total{job="people",outcome="delivered"} 7.0' in text
    assert 'rest_consumer_retries_total{job="people"} 2.0' in text
    assert 'rest_consumer_in_flight{job="people"} 3.0' in text
    assert 'rest_consumer_request_duration_seconds_bucket{job="people",le="0.005"} 1.0' in text
    assert 'rest_consumer_request_duration_seconds_bucket{job="people",le="0.25"} 2.0' in text
    assert 'rest_consumer_request_duration_seconds_count{job="people"} 3.0' in text
    assert "tok-metrics" not in text
