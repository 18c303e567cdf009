"""The user-facing commands against real services: dev, produce, Flower."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import redis
from test_pipeline import simple_job

from conftest import FIXTURES, LOOPBACK
from helpers import descendants, spawn, stop, wait_for
from rest_consumer.devtools.services import free_port
from rest_consumer.state.store import JobStore


def test_produce_sends_files_and_demo_records(pipeline: Any, endpoint: Any,
                                              real_redis: redis.Redis) -> None:
    topic = "cli.produce"
    pipeline.create_topic(topic)
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, topic))
    pipeline.start_worker()
    pipeline.start_reader()
    proc = spawn("produce", topic, str(FIXTURES / "person-10.avro"),
                 str(FIXTURES / "person-10.jsonl"), "--demo", "25", env=pipeline.env,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "produced 14 message(s)" in out
    wait_for(lambda: len(endpoint.keys()) == 10 + 10 + 25, 60, what="45 deliveries")


def flower_get(port: int, path: str, auth: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_flower_shows_readable_tasks_and_no_secret(pipeline: Any, endpoint: Any,
                                                   real_redis: redis.Redis) -> None:
    topic = "cli.flower"
    pipeline.create_topic(topic)
    job = simple_job(endpoint, topic, token="flower-secret-9", batch_size=1)
    JobStore(real_redis, LOOPBACK).upsert("people", job)
    port = free_port()
    flower = spawn("flower", "--port", str(port),
                   env={**pipeline.env, "FLOWER_BASIC_AUTH": "ops:flower-pw-0123"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pipeline.start_worker()
        pipeline.start_reader()
        wait_for(lambda: flower_get(port, "/api/workers?refresh=1", "ops:flower-pw-0123"), 30,
                 what="Flower to see the worker")
        pipeline.produce(topic, [json.dumps({"id": f"f{i}", "name": "n"}).encode()
                                 for i in range(3)])
        wait_for(lambda: len(endpoint.keys()) == 3, 30, what="3 deliveries")
        tasks = wait_for(lambda: (t := flower_get(port, "/api/tasks", "ops:flower-pw-0123"))
                         and len(t) >= 3 and t, 30, what="Flower to list the tasks")
        shown = sorted(task["args"] for task in tasks.values())
        assert shown == [f"job=people {topic}[0]@{i}" for i in range(3)]
        assert "flower-secret-9" not in json.dumps(tasks)
        try:
            flower_get(port, "/api/tasks", "ops:wrong")
            raise AssertionError("Flower answered without the right credentials")
        except urllib.error.HTTPError as e:
            assert e.code == 401
    finally:
        stop(flower)


def test_dev_runs_the_whole_pipeline_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    env = {"REDIS_URL": "", "KAFKA_BOOTSTRAP_SERVERS": "", "DEV_LOG_DIR": str(tmp_path),
           "API_PORT": str(free_port()), "FLOWER_PORT": str(free_port())}
    proc = spawn("dev", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "delivered #5:" in line:
                break
        assert any("rest-consumer is running." in line for line in lines), "".join(lines)
        children = descendants(proc.pid)
        assert len(children) >= 6  # redis, kafka, api, reader, worker, flower
        proc.send_signal(signal.SIGINT)
        # (the rest of its output is read on, so a full pipe can never hold it up)
        threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True).start()
        assert proc.wait(60) == 0, _dev_story(lines, tmp_path)
        alive = [pid for pid in children if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        assert alive == []
    finally:
        stop(proc)


def _dev_story(lines: list[str], logs: Path) -> str:
    """What ``dev`` printed and the tail of each process's log, for a failure message."""
    tails = [f"== {log.name}\n" + "".join(log.read_text(errors="replace").splitlines(True)[-15:])
             for log in sorted(logs.glob("*.log"))]
    return "".join(lines[-40:]) + "\n".join(tails)


def test_a_worker_that_celery_gives_up_on_restarts_in_place(redis_url: str,
                                                             tmp_path: Path) -> None:
    # Given a worker whose Celery stops on an unrecoverable error (here: its pidfile cannot be
    # written; seen in fault runs: kombu raising while closing a channel after Redis died)
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = spawn("worker", "-c", "1", "--pidfile", str(tmp_path / "missing" / "w.pid"),
                     env={"REDIS_URL": redis_url}, stdout=out, stderr=subprocess.STDOUT)
    try:
        # Then the same process starts Celery again, as a supervisor would
        wait_for(lambda: log.read_text().count("restarting it in 2 s") >= 2, 60,
                 what="two restarts")
        assert proc.poll() is None
    finally:
        stop(proc)
    # And a worker asked to stop does stop (no restart)
    with open(tmp_path / "ok.log", "w") as out:
        proc = spawn("worker", "-c", "1", env={"REDIS_URL": redis_url}, stdout=out,
                     stderr=subprocess.STDOUT)
    wait_for(lambda: "ready" in (tmp_path / "ok.log").read_text(), 60, what="the worker")
    assert stop(proc) == 0
    assert "restarting" not in (tmp_path / "ok.log").read_text()
