"""The command line, run as a user would: ``rest-consumer services`` and ``rest-consumer api``."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import urllib.error
import urllib.request
from typing import Any

import psutil
import redis
from confluent_kafka.admin import AdminClient

from conftest import valid_job
from helpers import descendants, spawn, stop, wait_for
from rest_consumer.devtools.services import free_port

AUTH = "Basic " + base64.b64encode(b"admin:pw-for-tests").decode()


def test_services_start_redis_and_kafka_print_them_and_stop_cleanly() -> None:
    env = {"REDIS_URL": "", "KAFKA_BOOTSTRAP_SERVERS": ""}
    proc = spawn("services", env=env, stdout=subprocess.PIPE)
    try:
        lines = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(2))  # type: ignore[union-attr]
        assert set(lines) == {"REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"}
        assert redis.Redis.from_url(lines["REDIS_URL"]).ping()
        admin = AdminClient({"bootstrap.servers": lines["KAFKA_BOOTSTRAP_SERVERS"]})
        assert admin.list_topics(timeout=10).brokers
        children = descendants(proc.pid)
        assert len(children) >= 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not [pid for pid in children if psutil.pid_exists(pid)
                    and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    finally:
        stop(proc)


def request(url: str, method: str = "GET", body: Any = None, auth: str | None = AUTH) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_served_by_gunicorn_against_real_services(redis_url: str, kafka_bootstrap: str,
                                                      real_redis: redis.Redis,
                                                      tmp_path: Any) -> None:
    port = free_port()
    env = {"REDIS_URL": redis_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "API_PORT": str(port), "API_USER": "admin", "API_PASSWORD": "pw-for-tests",
           "JOBS_DIR": str(tmp_path)}
    proc = spawn("api", env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = wait_for(lambda: request(f"{base}/readyz"), what="the API")
        assert (status, body["checks"]) == (200, {"redis": "ok", "kafka": "ok"})
        assert request(f"{base}/jobs", auth=None)[0] == 401
        doc = valid_job(token="very-secret-token")
        status, body = request(f"{base}/job/people", "POST", doc)
        assert status == 201 and body["token"] == "***"
        status, body = request(f"{base}/job/people", "POST", valid_job(type="FETCH"))
        assert status == 400 and body["details"][0]["field"] == "type"
        assert request(f"{base}/job/people")[1]["token"] == "***"
        assert request(f"{base}/job/people", "DELETE")[0] == 200
    finally:
        assert stop(proc) == 0
    log = proc.stderr.read()  # type: ignore[union-attr]
    assert "very-secret-token" not in log and "pw-for-tests" not in log


def test_api_refuses_to_start_without_credentials(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "API_USER": "", "API_PASSWORD": "", "API_TOKEN": ""}
    proc = spawn("api", env=env, stderr=subprocess.PIPE)
    assert proc.wait(30) != 0
    assert "API_USER" in proc.stderr.read()  # type: ignore[union-attr]
