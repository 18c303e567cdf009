"""Prometheus metrics. Workers and readers write numbers to Redis; the API's ``/metrics``
renders them all, so one scrape covers every process on every machine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from rest_consumer.core import tls
from rest_consumer.state import health, keys
from rest_consumer.state.replies import as_text
from rest_consumer.state.store import JobStore
from rest_consumer.state.throughput import LATENCY_BUCKETS
from rest_consumer.web.overview import JobSnapshot, snapshots
from rest_consumer.web.status import state_of

JobFilter = Callable[[Iterable[dict[str, Any]]], list[dict[str, Any]]]

class RedisCollector:
    """Collects every job's metrics from Redis at scrape time."""

    def __init__(self, store: JobStore, shown: JobFilter | None = None) -> None:
        self.store = store
        self.shown = shown or (lambda jobs: list(jobs))
        """Which jobs the caller may see (``policy.visible``)."""

    def collect(self) -> Iterator[Metric]:
        client = self.store.redis
        jobs = self.shown(self.store.list())
        pipe = client.pipeline(transaction=False)
        for job in jobs:
            pipe.hgetall(keys.latency(job["id"]))
        histograms = pipe.execute()
        families = _job_families()
        for snapshot, histogram in zip(snapshots(client, jobs), histograms, strict=True):
            _add_job(families, snapshot, histogram)
        yield from (*families.values(), _certificate_expiry(jobs),
                    *_endpoint_health(client, jobs))


def _job_families() -> dict[str, Any]:
    return {
        "outcomes": CounterMetricFamily("rest_consumer_messages", "Records by final outcome",
                                        labels=["job", "outcome"]),
        "dispatched": CounterMetricFamily("rest_consumer_dispatched",
                                          "Kafka messages handed to workers", labels=["job"]),
        "retries": CounterMetricFamily("rest_consumer_retries", "Retried records",
                                       labels=["job"]),
        "in_flight": GaugeMetricFamily("rest_consumer_in_flight",
                                       "Messages dispatched and not yet final", labels=["job"]),
        "dead": GaugeMetricFamily(
            "rest_consumer_dead_letters",
            "Dead letters not replayed or purged (the Redis index of the job's dead-letter "
            "topic; absent while the index waits to be rebuilt)",
            labels=["job"]),
        "running": GaugeMetricFamily("rest_consumer_job_running",
                                     "1 when a reader runs the job", labels=["job", "state"]),
        "lag": GaugeMetricFamily("rest_consumer_consumer_lag",
                                 "Messages behind the high watermark, per partition",
                                 labels=["job", "topic", "partition"]),
        "latency": HistogramMetricFamily("rest_consumer_request_duration_seconds",
                                         "HTTP request duration", labels=["job"]),
    }


def _add_job(families: dict[str, Any], snapshot: JobSnapshot,
             histogram: dict[Any, Any]) -> None:
    job_id, counts = snapshot.job["id"], snapshot.counters
    for outcome in ("delivered", "dead_lettered", "dead_letters_lost", "skipped"):
        families["outcomes"].add_metric([job_id, outcome], counts.get(outcome, 0))
    families["dispatched"].add_metric([job_id], counts.get("dispatched", 0))
    families["retries"].add_metric([job_id], counts.get("retried", 0))
    families["in_flight"].add_metric([job_id], sum(b.in_flight for b in snapshot.beats))
    if snapshot.dead_letters is not None:
        families["dead"].add_metric([job_id], snapshot.dead_letters)
    state = state_of(snapshot.job, snapshot.beats)["state"]
    families["running"].add_metric([job_id, state], 1 if state == "running" else 0)
    for beat in snapshot.beats:
        for partition in beat.partitions.values():
            if isinstance(partition, dict) and partition.get("lag") is not None:
                families["lag"].add_metric(
                    [job_id, partition["topic"], str(partition["partition"])], partition["lag"])
    buckets, total = _histogram(histogram)
    families["latency"].add_metric([job_id], buckets, total)


def _endpoint_health(client: Any, jobs: list[dict[str, Any]]) -> list[Metric]:
    """Each job's adaptive limit, circuit-breaker state and refused answers (``health``)."""
    limit = GaugeMetricFamily("rest_consumer_endpoint_limit",
                              "Requests the job may have in flight now (adaptive)",
                              labels=["job"])
    state = GaugeMetricFamily("rest_consumer_endpoint_state",
                              "1 for the circuit breaker's current state", labels=["job", "state"])
    refused = CounterMetricFamily("rest_consumer_endpoint_refused",
                                  "Answers 429/503, timeouts and connection errors",
                                  labels=["job"])
    for job in jobs:
        shown = health.read(client, job["id"])
        if shown["limit"] is not None:
            limit.add_metric([job["id"]], shown["limit"])
        for name in ("closed", "open", "half-open"):
            state.add_metric([job["id"], name], 1 if shown["state"] == name else 0)
        refused.add_metric([job["id"]], shown["refused"])
    return [limit, state, refused]


def _certificate_expiry(jobs: list[dict[str, Any]]) -> Metric:
    """When each job's first TLS certificate (CA or client) expires: alert on it."""
    expiry = GaugeMetricFamily("rest_consumer_tls_certificate_expiry_timestamp_seconds",
                               "When the job's first TLS certificate (tls.ca or "
                               "tls.client_cert) expires, as a Unix time", labels=["job"])
    for job in jobs:
        if (expires := tls.earliest_expiry(job.get("tls"))) is not None:
            expiry.add_metric([job["id"]], expires.timestamp())
    return expiry


def _histogram(raw: dict[Any, Any]) -> tuple[list[tuple[str, float]], float]:
    counts = {as_text(k): float(v) for k, v in raw.items()}
    buckets, running = [], 0.0
    for i, bound in enumerate((*LATENCY_BUCKETS, float("inf"))):
        running += counts.get(str(i), 0.0)
        buckets.append(("+Inf" if bound == float("inf") else str(bound), running))
    return buckets, counts.get("sum", 0.0)


def render(store: JobStore, shown: JobFilter | None = None) -> bytes:
    """The Prometheus text exposition of every job's metrics (those ``shown`` keeps)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(RedisCollector(store, shown))
    return generate_latest(registry)
