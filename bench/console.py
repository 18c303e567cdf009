"""The console with 500 jobs: how long a page load takes in headless Chromium, from navigation
to the jobs table drawn, and how long the table's one request takes. Run by ``bench/run``
(and alone: ``bench/run --console``).

Half of the jobs look running (a reader's heartbeat with lag, counters, throughput buckets, a
last error, dead letters), as the API would find them on a busy deployment. Every load is
reported (median and slowest of ``LOADS``, no best-of), with the API served by gunicorn as
``rest-consumer api`` serves it."""

from __future__ import annotations

import base64
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from browser import ConsoleApi, start_browser  # noqa: E402

from rest_consumer.core.destinations import Allowlist  # noqa: E402
from rest_consumer.state import (  # noqa: E402
    heartbeat,
    keys,
    throughput,
)
from rest_consumer.state.heartbeat import Heartbeat  # noqa: E402
from rest_consumer.state.store import JobStore  # noqa: E402

JOBS = 500
LOADS = 10
GOAL_MS = 300


def _job(i: int) -> dict[str, Any]:
    return {"id": f"job-{i:03d}", "owner": f"team-{i % 7}", "type": "POST",
            "topic": [f"aether.Entity{i % 40}"], "datamap": {"id": "$.msg.id"},
            "url": "http://127.0.0.1:9/entities/{id}", "json_body": ["id"],
            "token": "bench-secret-token"}


def fill(client: redis.Redis) -> None:
    """500 jobs, half of them looking busy."""
    store = JobStore(client, Allowlist.parse(("127.0.0.0/8",)))
    now = time.time()
    for i in range(JOBS):
        job, _ = store.upsert(f"job-{i:03d}", _job(i))
        pipe = client.pipeline()
        pipe.set(keys.dead_letter_scanned(job["id"]), 0)
        if i % 2 == 0:
            partitions = {f"t[{p}]": {"topic": "t", "partition": p, "lag": i + p}
                          for p in range(4)}
            heartbeat.beat(pipe, job["id"], "reader-1", Heartbeat(
                job["hash"], partitions=partitions, in_flight=i % 50))
            pipe.hset(keys.counters(job["id"]), mapping={"delivered": i * 1000})
            for seconds in range(0, 900, 10):
                throughput.record(pipe, job["id"], {"delivered": i + seconds // 10},
                                  now=now - seconds)
            pipe.set(keys.last_error(job["id"]), json.dumps(
                {"reason": "HTTP 503 Service Unavailable", "time": now - i}))
            pipe.zadd(keys.dead_letter_index(job["id"]), {str(n): n for n in range(1 + i % 9)})
        pipe.execute()


def time_rows(api: ConsoleApi) -> list[float]:
    request = urllib.request.Request(f"{api.base}/ui/api/jobs")
    token = base64.b64encode(f"{api.env['API_USER']}:{api.env['API_PASSWORD']}".encode())
    request.add_header("Authorization", "Basic " + token.decode())
    times = []
    for _ in range(LOADS):
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as response:
            # (at least: jobs of earlier scenarios come back from the jobs topic)
            assert len(json.loads(response.read())["jobs"]) >= JOBS
        times.append((time.perf_counter() - started) * 1000)
    return times


def time_page_loads(api: ConsoleApi, profile: Path) -> list[float]:
    """Navigation start to the table drawn (the page records ``performance.now()`` then)."""
    browser = start_browser(profile)
    try:
        browser.get(api.signed_in("/ui/"))  # the browser keeps the credentials
        _rendered(browser)
        times = []
        for _ in range(LOADS):
            browser.get(f"{api.base}/ui/")
            times.append(_rendered(browser))
            rows = browser.execute_script("return document.querySelectorAll('#jobs tbody tr')"
                                          ".length")
            assert rows >= JOBS, rows
        return times
    finally:
        browser.quit()


def _rendered(browser: Any, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.execute_script("return document.body && document.body.dataset.rendered")
        if value:
            return float(value)
        time.sleep(0.02)
    raise TimeoutError("the jobs table was not drawn")


def run(env: dict[str, str], workdir: Path) -> dict[str, float]:
    """The console's figures against the services in ``env``."""
    client = redis.Redis.from_url(env["REDIS_URL"])
    fill(client)
    api = ConsoleApi({**env, "JOBS_DIR": str(workdir)}, workdir / "console-api.log")
    try:
        rows = time_rows(api)
        pages = time_page_loads(api, workdir / "chromium-profile")
    finally:
        api.stop()
    print(f"  console, {JOBS} jobs: page load median {statistics.median(pages):.0f} ms, "
          f"slowest {max(pages):.0f} ms (goal {GOAL_MS} ms); the table's request median "
          f"{statistics.median(rows):.0f} ms, slowest {max(rows):.0f} ms", flush=True)
    return {"console_500_jobs_load_ms": round(statistics.median(pages)),
            "console_500_jobs_load_max_ms": round(max(pages)),
            "console_500_rows_ms": round(statistics.median(rows))}


def main() -> None:
    from rest_consumer.devtools.services import LocalServices

    with tempfile.TemporaryDirectory(prefix="rc-console-") as tmp:
        services = LocalServices(Path(tmp) / "services").start()
        try:
            figures = run(services.env(), Path(tmp))
        finally:
            services.stop()
    print("RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
