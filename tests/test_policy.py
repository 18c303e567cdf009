"""Who may do what: every route, every role, own and other owners' jobs, generated from the
policy table and the app's own routes (a route without a rule fails here), on real Redis and
Kafka; then tokens, deleted users, the audit trail, throttled logins and METRICS_TOKEN."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from flask import Flask

from conftest import valid_job
from rest_consumer.core.config import Settings
from rest_consumer.state.store import JobStore
from rest_consumer.state.users import UserStore
from rest_consumer.web.app import create_app
from rest_consumer.web.authn import MAX_FAILURES_PER_ADDRESS
from rest_consumer.web.policy import POLICY, rule_for

PASSWORD = "a-long-user-password"
ADMIN = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret-admin").decode()}
OWN, OTHER = "owner-a", "owner-b"
SOMEONE = {"role": "viewer", "owners": [OWN], "password": PASSWORD}


def basic(name: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(kafka_settings: Settings, real_redis: redis.Redis) -> Flask:
    store = JobStore.for_settings(real_redis, kafka_settings)
    return create_app(kafka_settings, store=store, kafka_ready=lambda: None,
                      dispatch=lambda job, groups: None, load_files=False)


@pytest.fixture
def callers(app: Flask) -> dict[str, dict[str, str]]:
    """Headers of each kind of caller: the bootstrap admin, a stored admin, an editor and a
    viewer of OWN (users by bearer token: the matrix is about rights, not password checks)."""
    client = app.test_client()
    found = {"bootstrap admin": ADMIN}
    for name, role in (("root", "admin"), ("ed", "editor"), ("vi", "viewer")):
        made = client.post(f"/user/{name}", headers=ADMIN,
                           json={"role": role, "owners": [OWN], "password": PASSWORD})
        assert made.status_code == 201, made.json
        token = client.post(f"/user/{name}/token", headers=ADMIN).json["token"]
        found[f"{role} {name}"] = bearer(token)
    return found


def seed(app: Flask) -> JobStore:
    store: JobStore = app.extensions["rest_consumer"]["store"]
    store.upsert("ja", valid_job(id="ja", owner=OWN))
    store.upsert("jb", valid_job(id="jb", owner=OTHER, basic_auth={
        "user": "u", "password": "job-secret-password"}))
    return store


def routes(app: Flask) -> Iterator[tuple[str, str, str]]:
    """(endpoint, method, rule) of every route the app serves."""
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, rule.rule


def concrete(rule: str, job: str, owner: str) -> str:
    path = rule.replace("<job_id>", job).replace("<owner>", owner)
    path = path.replace("<name>", "someone").replace("<offset>", "latest")
    return path.replace("<path:filename>", "console.css")


def body(endpoint: str, job: str, owner: str) -> Any:
    if endpoint == "routes.upsert_job":
        return valid_job(id=job, owner=owner)
    if endpoint == "users.upsert_user":
        return SOMEONE
    if endpoint == "operations.preview":
        return {"id": "p1"}
    return {}


def expected(caller: str, endpoint: str, other: bool) -> str:
    """What the policy table says a caller gets: allowed, 403 or 404."""
    rule = rule_for(endpoint)
    assert rule is not None, f"route {endpoint} has no policy"
    role = caller.split()[0] if caller != "bootstrap admin" else "admin"
    if rule.action == "public":
        return "allowed"
    may = {"admin": ("read", "change", "admin"), "editor": ("read", "change"),
           "viewer": ("read",)}
    if rule.action not in may[role]:
        return "403"
    if other and role != "admin" and rule.scope in ("job", "owner"):
        return "404"
    return "allowed"


def test_every_route_has_a_rule(app: Flask) -> None:
    served = {endpoint for endpoint, _, _ in routes(app)}
    assert served <= set(POLICY), f"routes without a rule: {served - set(POLICY)}"
    assert set(POLICY) <= served, f"rules of no route: {set(POLICY) - served}"


def test_the_whole_matrix_of_roles_routes_and_owners(app: Flask,
                                                     callers: dict[str, dict[str, str]]) -> None:
    client = app.test_client()
    users: UserStore = app.extensions["rest_consumer"]["users"]
    checked = 0
    for endpoint, method, rule in routes(app):
        for other in (False, True):
            for caller, headers in callers.items():
                store = seed(app)
                if users.find("someone") is None:
                    users.upsert("someone", SOMEONE, by="test")
                before = store.get("jb")
                job, owner = ("jb", OTHER) if other else ("ja", OWN)
                response = client.open(concrete(rule, job, owner), method=method,
                                       headers=headers, json=body(endpoint, job, owner))
                want = expected(caller, endpoint, other)
                what = f"{caller} {method} {concrete(rule, job, owner)}: {response.status_code}"
                if want == "allowed":
                    assert response.status_code not in (401, 403, 404, 500), what
                else:
                    assert str(response.status_code) == want, what
                    assert store.find("jb") == before, f"{what} changed the other's job"
                    assert "job-secret-password" not in response.get_data(as_text=True)
                checked += 1
    assert checked > 200


def test_lists_console_and_metrics_show_only_the_callers_owners(
        app: Flask, callers: dict[str, dict[str, str]]) -> None:
    seed(app)
    client = app.test_client()
    for caller in ("editor ed", "viewer vi"):
        headers = callers[caller]
        assert [j["id"] for j in client.get("/jobs", headers=headers).json] == ["ja"]
        assert client.get(f"/jobs/{OTHER}", headers=headers).status_code == 404
        rows = client.get("/ui/api/jobs", headers=headers).json
        assert [r["id"] for r in rows["jobs"]] == ["ja"] and rows["owners"] == [OWN]
        metrics = client.get("/metrics", headers=headers).get_data(as_text=True)
        assert 'job="ja"' in metrics and 'job="jb"' not in metrics
        page = client.get("/ui/job/ja", headers=headers).get_data(as_text=True)
        assert ('id="stop"' in page) == caller.startswith("editor")
        assert ('id="purge"' in page) == caller.startswith("editor")
        assert 'id="history"' not in page
    assert 'id="history"' in client.get("/ui/job/ja", headers=ADMIN).get_data(as_text=True)
    assert len(client.get("/jobs", headers=ADMIN).json) == 2


def test_an_editor_may_not_give_a_job_to_an_owner_it_does_not_have(
        app: Flask, callers: dict[str, dict[str, str]]) -> None:
    seed(app)
    client = app.test_client()
    editor = callers["editor ed"]
    for job in ("ja", "new"):
        given = client.post(f"/job/{job}", headers=editor, json=valid_job(id=job, owner=OTHER))
        assert given.status_code == 403
    made = client.post("/job/new", headers=editor, json=valid_job(id="new", owner=OWN))
    assert made.status_code == 201 and made.json["modified_by"] == "ed"


def test_a_users_password_and_token_stop_working_when_it_is_deleted(app: Flask) -> None:
    client = app.test_client()
    client.post("/user/ed", headers=ADMIN, json={"role": "editor", "owners": [OWN],
                                                 "password": PASSWORD})
    token = client.post("/user/ed/token", headers=ADMIN).json["token"]
    listed = client.get("/users", headers=ADMIN)
    assert PASSWORD not in listed.get_data(as_text=True) and token not in listed.get_data(
        as_text=True)
    assert listed.json[0]["tokens"] == 1 and listed.json[0]["role"] == "editor"
    assert client.get("/jobs", headers=basic("ed")).status_code == 200
    assert client.get("/jobs", headers=bearer(token)).status_code == 200
    assert client.get("/users", headers=bearer(token)).status_code == 403  # an editor's rights
    assert client.delete("/user/ed", headers=ADMIN).status_code == 200
    assert client.get("/jobs", headers=basic("ed")).status_code == 401
    assert client.get("/jobs", headers=bearer(token)).status_code == 401


def test_a_changed_password_is_refused_at_once_on_another_api_process(
        kafka_settings: Settings, real_redis: redis.Redis, app: Flask) -> None:
    other_process = create_app(kafka_settings, store=JobStore.for_settings(
        real_redis, kafka_settings), kafka_ready=lambda: None, load_files=False).test_client()
    client = app.test_client()
    client.post("/user/ed", headers=ADMIN, json={"role": "viewer", "owners": [OWN],
                                                 "password": PASSWORD})
    assert other_process.get("/jobs", headers=basic("ed")).status_code == 200
    client.post("/user/ed", headers=ADMIN, json={"role": "viewer", "owners": [OWN],
                                                 "password": "another-long-password"})
    assert other_process.get("/jobs", headers=basic("ed")).status_code == 401
    assert other_process.get("/jobs", headers=basic(
        "ed", "another-long-password")).status_code == 200


def test_users_survive_redis_losing_its_data(app: Flask, real_redis: redis.Redis) -> None:
    client = app.test_client()
    client.post("/user/ed", headers=ADMIN, json={"role": "editor", "owners": [OWN],
                                                 "password": PASSWORD})
    token = client.post("/user/ed/token", headers=ADMIN).json["token"]
    real_redis.flushall()
    assert client.get("/jobs", headers=basic("ed")).status_code == 200
    assert client.get("/jobs", headers=bearer(token)).status_code == 200
    assert client.get("/users", headers=ADMIN).json[0]["owners"] == [OWN]


def test_every_change_is_in_the_audit_trail_without_secrets(
        app: Flask, callers: dict[str, dict[str, str]]) -> None:
    client = app.test_client()
    seed(app)
    editor = callers["editor ed"]
    job = valid_job(id="ja", owner=OWN, basic_auth={"user": "u",
                                                    "password": "job-secret-password"})
    assert client.post("/job/ja", headers=editor, json=job).status_code == 200
    assert client.post("/job/ja/stop", headers=editor).status_code == 200
    assert client.get("/job/ja", headers=editor).status_code == 200  # reads are not changes
    records = client.get("/audit?job=ja", headers=ADMIN).json
    assert [(r["who"], r["action"]) for r in records] == [("ed", "stop_job"),
                                                          ("ed", "upsert_job")]
    assert records[0]["from"] == "127.0.0.1" and records[0]["document"]["enabled"] is False
    assert "job-secret-password" not in json.dumps(records)
    assert records[1]["document"]["basic_auth"]["password"] == "***"
    assert client.get("/job/ja", headers=editor).json["modified_by"] == "ed"
    users = client.get("/audit?user=ed", headers=ADMIN).json
    assert [r["action"] for r in users] == ["new_token", "upsert_user"]
    assert "password_hash" not in json.dumps(users)
    assert client.get("/audit", headers=editor).status_code == 403


def test_thirty_bad_passwords_from_one_address_are_answered_429(app: Flask) -> None:
    client = app.test_client()
    attacker = {"REMOTE_ADDR": "198.51.100.7"}
    statuses = [client.get("/jobs", headers=basic("admin", f"guess-{i}"),
                           environ_base=attacker).status_code for i in range(30)]
    assert statuses[:MAX_FAILURES_PER_ADDRESS] == [401] * MAX_FAILURES_PER_ADDRESS
    assert set(statuses[MAX_FAILURES_PER_ADDRESS:]) == {429}
    refused = client.get("/jobs", headers=ADMIN, environ_base=attacker)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert client.get("/jobs", headers=ADMIN).status_code == 200  # from elsewhere: as before


def test_the_metrics_token_reads_metrics_and_nothing_else(
        kafka_settings: Settings, real_redis: redis.Redis) -> None:
    settings = replace(kafka_settings, metrics_token="scrape-0123456789abcdef")
    client = create_app(settings, store=JobStore.for_settings(real_redis, settings),
                        kafka_ready=lambda: None, load_files=False).test_client()
    scraper = bearer("scrape-0123456789abcdef")
    assert client.get("/metrics", headers=scraper).status_code == 200
    assert client.get("/jobs", headers=scraper).status_code == 401


def test_a_users_console_token_is_its_own(app: Flask) -> None:
    client = app.test_client()
    client.post("/user/ed", headers=ADMIN, json={"role": "editor", "owners": [OWN],
                                                 "password": PASSWORD})
    seed(app)

    def token(headers: dict[str, str]) -> str:
        page = client.get("/ui/", headers=headers).get_data(as_text=True)
        return page.split('name="csrf-token" content="')[1].split('"')[0]

    mine, admins = token(basic("ed")), token(ADMIN)
    assert mine != admins
    from_console = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    with_admins = {**basic("ed"), **from_console, "X-CSRF-Token": admins}
    assert client.post("/job/ja/stop", headers=with_admins).status_code == 403
    with_mine = {**basic("ed"), **from_console, "X-CSRF-Token": mine}
    assert client.post("/job/ja/stop", headers=with_mine).status_code == 200
