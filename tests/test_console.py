"""The console's routes, its protection against cross-site request forgery and the figures it
shows, through Flask's test client (on fakeredis and on the real Redis). The pages themselves
are tested in a real browser in ``test_console_browser.py``."""

from __future__ import annotations

import json
import time
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient
from test_api import BASIC, BEARER

from conftest import valid_job
from rest_consumer.core.config import Settings
from rest_consumer.state import heartbeat, keys, throughput
from rest_consumer.state.heartbeat import Heartbeat
from rest_consumer.state.store import JobStore
from rest_consumer.web import csrf
from rest_consumer.web.app import create_app
from rest_consumer.web.authn import bootstrap_admin
from rest_consumer.web.overview import snapshots


@pytest.fixture
def store(any_redis: Any) -> JobStore:
    return JobStore(any_redis)


@pytest.fixture
def client(settings: Settings, store: JobStore) -> FlaskClient:
    return create_app(settings, store=store, kafka_ready=lambda: None).test_client()


def indexed(store: JobStore, *job_ids: str) -> None:
    """Mark the jobs' dead-letter indexes as rebuilt (else the console reads Kafka for them)."""
    for job_id in job_ids:
        store.redis.set(keys.dead_letter_scanned(job_id), 0)


def test_the_pages_need_the_api_credentials_and_forbid_framing(client: FlaskClient,
                                                                store: JobStore) -> None:
    store.upsert("people", valid_job())
    indexed(store, "people")
    unauthenticated = client.get("/ui/")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Basic")
    for path in ("/ui", "/ui/", "/ui/job/people"):
        page = client.get(path, headers=BASIC)
        assert page.status_code == 200, path
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Cache-Control"] == "no-store"
    assert client.get("/ui/job/nobody", headers=BASIC).status_code == 404


def test_the_page_carries_the_token_and_the_assets_come_from_the_package(
        client: FlaskClient, settings: Settings) -> None:
    page = client.get("/ui/", headers=BASIC).get_data(as_text=True)
    assert f'<meta name="csrf-token" content="{csrf.token(bootstrap_admin(settings))}">' in page
    assert "<script>" not in page and "http" not in page.split("<body")[0].replace(
        'http-equiv', '')  # no inline script, no asset from elsewhere
    script = client.get("/ui/static/console.js", headers=BASIC)
    assert script.status_code == 200 and "X-CSRF-Token" in script.get_data(as_text=True)
    assert client.get("/ui/static/console.css", headers=BASIC).status_code == 200
    script.close()


def test_the_token_is_the_same_in_every_process_and_changes_with_the_password(
        settings: Settings) -> None:
    again = Settings(api_user="admin", api_password="s3cret-admin")
    other = Settings(api_user="admin", api_password="another-s3cret")
    tokens = [csrf.token(bootstrap_admin(s)) for s in (settings, again, other)]
    assert tokens[0] == tokens[1] != tokens[2]
    assert "s3cret" not in csrf.token(bootstrap_admin(settings))


FROM_CONSOLE = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}


@pytest.mark.parametrize(("headers", "refused_because"), [
    ({"Origin": "http://evil.example"}, "comes from http://evil.example"),
    ({"Origin": "http://localhost:9999"}, "not from this API"),
    ({"Sec-Fetch-Site": "cross-site"}, "from a cross-site page"),
    ({"Sec-Fetch-Site": "same-site"}, "from a same-site page"),
    (FROM_CONSOLE, "X-CSRF-Token"),
    ({**FROM_CONSOLE, "X-CSRF-Token": "0" * 64}, "X-CSRF-Token"),
])
def test_a_browsers_forged_request_is_refused(client: FlaskClient, store: JobStore,
                                              headers: dict[str, str],
                                              refused_because: str) -> None:
    store.upsert("people", valid_job())
    for method, path in (("POST", "/job/people/stop"), ("DELETE", "/job/people"),
                         ("POST", "/job/people/dead_letters/replay")):
        answer = client.open(path, method=method, headers={**BASIC, **headers})
        assert answer.status_code == 403, (method, path)
        assert refused_because in answer.get_json()["details"]
    assert store.get("people").get("enabled", True) is True


def test_the_console_curl_and_bearer_clients_may_change_state(client: FlaskClient,
                                                              store: JobStore,
                                                              settings: Settings) -> None:
    store.upsert("people", valid_job())
    console = {**BASIC, **FROM_CONSOLE, "X-CSRF-Token": csrf.token(bootstrap_admin(settings))}
    assert client.post("/job/people/stop", headers=console).status_code == 200
    assert client.post("/job/people/start", headers=BASIC).status_code == 200  # curl
    bearer = {**BEARER, "Origin": "http://evil.example"}  # no browser sends a bearer by itself
    assert client.post("/job/people/stop", headers=bearer).status_code == 200
    # and reading never needs the token
    assert client.get("/job/people", headers={**BASIC, **FROM_CONSOLE}).status_code == 200


def test_authentication_is_checked_before_forgery(client: FlaskClient, store: JobStore) -> None:
    store.upsert("people", valid_job())
    answer = client.post("/job/people/stop", headers={"Origin": "http://evil.example"})
    assert answer.status_code == 401


def beat(client: Any, job_id: str, job_hash: str, lag: int, in_flight: int = 0) -> None:
    pipe = client.pipeline()
    heartbeat.beat(pipe, job_id, "reader-1", Heartbeat(
        job_hash, partitions={"t[0]": {"topic": "t", "partition": 0, "lag": lag}},
        in_flight=in_flight))
    pipe.execute()


def test_the_jobs_table_shows_each_jobs_figures_for_one_owner_or_all(
        client: FlaskClient, store: JobStore) -> None:
    # Given two jobs of "team-a" (one running with lag, deliveries and an error) and one of b
    running, _ = store.upsert("orders", valid_job(id="orders", owner="team-a"))
    store.upsert("people", valid_job(owner="team-a", enabled=False))
    store.upsert("visits", valid_job(id="visits", owner="team-b"))
    redis = store.redis
    beat(redis, "orders", running["hash"], lag=42, in_flight=3)
    redis.hset(keys.counters("orders"), mapping={"delivered": 120, "dead_lettered": 2})
    pipe = redis.pipeline()
    throughput.record(pipe, "orders", {"delivered": 60}, now=time.time() - 30)
    pipe.execute()
    redis.set(keys.last_error("orders"), json.dumps({"reason": "HTTP 503", "time": 1.0}))
    redis.zadd(keys.dead_letter_index("orders"), {"7": 7, "9": 9})
    indexed(store, "orders", "people", "visits")
    # When the console asks for team-a's rows
    body = client.get("/ui/api/jobs?owner=team-a", headers=BASIC).get_json()
    # Then
    assert body["owners"] == ["team-a", "team-b"]
    rows = {row["id"]: row for row in body["jobs"]}
    assert set(rows) == {"orders", "people"}
    orders = rows["orders"]
    assert (orders["state"], orders["lag"], orders["in_flight"]) == ("running", 42, 3)
    assert (orders["delivered"], orders["dead_letters"]) == (120, 2)
    assert orders["rate"] == 1.0 and sum(orders["spark"]) == 60
    assert orders["last_error"]["reason"] == "HTTP 503"
    people = rows["people"]
    assert (people["state"], people["lag"], people["rate"], people["delivered"]) == (
        "stopped", None, 0, 0)
    assert len(client.get("/ui/api/jobs", headers=BASIC).get_json()["jobs"]) == 3


class CountingRedis(fakeredis.FakeRedis):
    """Counts round trips: each command sent alone, and each pipeline executed."""

    trips = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        CountingRedis.trips += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> Any:
            CountingRedis.trips += 1
            return execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


def test_the_table_reads_any_number_of_jobs_in_the_same_round_trips(settings: Settings) -> None:
    store = JobStore(CountingRedis())
    client = create_app(settings, store=store, kafka_ready=lambda: None).test_client()
    trips = []
    for count in (3, 60):
        for i in range(count):
            store.upsert(f"job-{i:03d}", valid_job(id=f"job-{i:03d}"))
            indexed(store, f"job-{i:03d}")
        client.get("/ui/api/jobs", headers=BASIC)  # (loads the jobs once)
        CountingRedis.trips = 0
        assert len(client.get("/ui/api/jobs", headers=BASIC).get_json()["jobs"]) == count
        trips.append(CountingRedis.trips)
    assert trips[0] == trips[1] <= 5


def test_throughput_buckets_give_a_window_of_rates_and_expire_by_themselves(
        any_redis: Any) -> None:
    now = 1_000_000.0 * throughput.BUCKET_S + 5  # 5 s into a bucket
    pipe = any_redis.pipeline()
    for seconds_ago, delivered in ((10, 30), (20, 30), (75, 12), (16 * 60, 500)):
        throughput.record(pipe, "orders", {"delivered": delivered, "dead_lettered": 1},
                          now=now - seconds_ago)
    throughput.record(pipe, "orders", {"delivered": 4}, now=now)  # the current bucket
    pipe.execute()
    series = throughput.read(any_redis, "orders", now=now)
    assert len(series["delivered"]) == throughput.WINDOW_BUCKETS
    assert series["delivered"][-1] == 4  # current, unfinished
    assert series["delivered"][-3:-1] == [30, 30]
    assert sum(series["delivered"]) == 76  # 16 minutes ago is out of the window
    assert series["rate"] == 1.0  # 60 in the last complete minute
    assert sum(series["dead_lettered"]) == 3
    ttls = [any_redis.ttl(key) for key in any_redis.scan_iter("throughput:orders:*")]
    assert ttls and all(0 < ttl <= 2 * throughput.WINDOW_BUCKETS * throughput.BUCKET_S
                        for ttl in ttls)


def test_a_snapshot_of_a_job_nobody_runs_is_all_zero(any_redis: Any) -> None:
    store = JobStore(any_redis)
    job, _ = store.upsert("people", valid_job())
    (snapshot,) = snapshots(any_redis, [job])
    row = snapshot.row()
    assert (row["state"], row["lag"], row["delivered"], row["rate"]) == ("pending", None, 0, 0)
    assert row["spark"] == [0] * 30
    assert row["dead_letters"] is None  # its index was never built: unknown, not zero
