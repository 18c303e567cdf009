"""The console in a real headless browser against real services: the API, a reader and a
worker in their own processes, Kafka, Redis and a recording endpoint on loopback.

Set ``CONSOLE_SCREENSHOTS=<dir>`` to keep the screenshots the README shows."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from browser import ConsoleApi, start_browser, text_of, wait_text
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_cli import request
from test_pipeline import simple_job

from conftest import LOOPBACK
from helpers import wait_for
from rest_consumer.state import keys
from rest_consumer.state.store import JobStore


@pytest.fixture
def api(pipeline: Any, tmp_path: Path) -> Iterator[ConsoleApi]:
    server = ConsoleApi(pipeline.env, tmp_path / "api.log")
    yield server
    server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    driver = start_browser(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


def auth(api: ConsoleApi) -> str:
    return "Basic " + base64.b64encode(f"{api.env['API_USER']}:{api.env['API_PASSWORD']}"
                                       .encode()).decode()


def screenshot(browser: webdriver.Chrome, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / name))


def accept_the_question(browser: webdriver.Chrome) -> str:
    alert = WebDriverWait(browser, 5).until(expected_conditions.alert_is_present())
    question = str(alert.text)
    alert.accept()
    return question


def test_watch_a_job_see_its_dead_letter_and_replay_it_from_the_console(
        pipeline: Any, endpoint: Any, api: ConsoleApi, browser: webdriver.Chrome,
        real_redis: redis.Redis) -> None:
    # Given a job created through the API, whose endpoint refuses record "bad" (HTTP 400)
    topic = "console.people"
    pipeline.create_topic(topic)
    recovered = threading.Event()
    endpoint.respond = lambda request, seen: (400 if request.path == "/p/bad"
                                              and not recovered.is_set() else 200)
    job = simple_job(endpoint, topic, token="console-secret-token", owner="team-a")
    status, _ = request(f"{api.base}/job/people", "POST", job, auth=auth(api))
    assert status == 201
    JobStore(real_redis, LOOPBACK).upsert("visits", simple_job(
        endpoint, "console.visits", id="visits", owner="team-b", enabled=False))
    pipeline.start_worker()
    pipeline.start_reader()
    # When the jobs page is open and data arrives
    browser.get(api.signed_in("/ui/"))
    wait_text(browser, 'tr[data-job="people"] .state', lambda t: t == "running", 60,
              "the job to show as running")
    values = [json.dumps({"id": f"p{i}", "name": "n"}).encode() for i in range(20)]
    pipeline.produce(topic, [*values, b'{"id": "bad", "name": "n"}'])
    # Then the counters move on the page without reloading it
    wait_text(browser, 'tr[data-job="people"] .delivered', lambda t: t == "20", 30,
              "20 deliveries on the jobs page")
    wait_text(browser, 'tr[data-job="people"] .dead-letters', lambda t: t == "1", 30,
              "the dead letter counted")
    assert "HTTP 400" in text_of(browser, 'tr[data-job="people"] .error-text')
    wait_text(browser, 'tr[data-job="people"] .rate-value', lambda t: float(t) > 0, 30,
              "a delivery rate")
    screenshot(browser, "console-jobs.png")
    # (one owner's jobs only)
    Select(browser.find_element(By.ID, "owner")).select_by_value("team-a")
    wait_text(browser, "#job-count", lambda t: t == "(1)", 10, "team-a's jobs only")
    assert browser.find_elements(By.CSS_SELECTOR, 'tr[data-job="visits"]') == []
    assert browser.current_url.endswith("/ui/?owner=team-a")
    # And the job's page shows the definition without its secret, and the dead letter's reason
    browser.find_element(By.LINK_TEXT, "people").click()
    wait_text(browser, "#definition", lambda t: '"token": "***"' in t, 10, "the definition")
    assert "console-secret-token" not in browser.page_source
    wait_text(browser, '[data-counter="delivered"]', lambda t: t == "20", 10, "the counter")
    reason = wait_text(browser, "#dead-letters tbody tr .reason", bool, 10, "the dead letter")
    assert reason == "HTTP 400"
    # (and the endpoint's health: its breaker closed, its limit and the limit over time)
    wait_text(browser, "#endpoint-state", lambda t: t == "closed", 10, "the breaker's state")
    assert "limit 32" in text_of(browser, "#endpoint-detail")
    assert browser.find_elements(By.CSS_SELECTOR, "#endpoint-limit svg.spark")
    screenshot(browser, "console-job.png")
    # When the endpoint recovers and the dead letter is chosen and replayed from the page
    recovered.set()
    browser.find_element(By.CSS_SELECTOR, "#dead-letters tbody input[type=checkbox]").click()
    browser.find_element(By.ID, "replay-chosen").click()
    # Then it is delivered, and the page says so
    wait_text(browser, "#message", lambda t: t == "replayed 1 dead letter(s)", 10)
    wait_for(lambda: any(r.path == "/p/bad" for r in endpoint.received), 30,
             what="the replayed record delivered")
    wait_text(browser, '[data-counter="delivered"]', lambda t: t == "21", 30, "21 delivered")
    wait_text(browser, "#dead-letter-total", lambda t: t == "(0)", 30, "no dead letter left")


def test_the_console_previews_stops_asks_first_and_shows_the_apis_refusals(
        pipeline: Any, endpoint: Any, api: ConsoleApi, browser: webdriver.Chrome,
        real_redis: redis.Redis) -> None:
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, "console.preview"))
    browser.get(api.signed_in("/ui/job/people"))
    wait_text(browser, "#definition", lambda t: '"id": "people"' in t, 10, "the definition")
    # Preview: the requests the job would send
    sample = browser.find_element(By.CSS_SELECTOR, "#preview textarea")
    sample.clear()
    sample.send_keys('{"id": "p7", "name": "Ada"}')
    browser.find_element(By.CSS_SELECTOR, "#preview button").click()
    preview = wait_text(browser, "#preview-result", bool, 10, "the preview")
    assert f'"url": "{endpoint.url}/p/p7"' in preview and 'Ada' in preview
    assert endpoint.received == []  # nothing sent
    # The API's refusal is shown as it says it
    sample.clear()
    sample.send_keys("[1, 2]")
    browser.find_element(By.CSS_SELECTOR, "#preview button").click()
    wait_text(browser, "#message", lambda t: "the body must be a JSON object" in t, 10)
    # Stopping asks first: declined, nothing happens; accepted, the job stops
    wait_text(browser, "#state", lambda t: t == "pending", 10, "the state (no reader runs it)")
    assert not browser.find_element(By.ID, "stop").get_attribute("disabled")
    assert browser.find_element(By.ID, "start").get_attribute("disabled")  # it is not stopped
    browser.find_element(By.ID, "stop").click()
    WebDriverWait(browser, 5).until(expected_conditions.alert_is_present()).dismiss()
    assert JobStore(real_redis).get("people").get("enabled", True) is True
    browser.find_element(By.ID, "stop").click()
    assert "Stop job people?" in accept_the_question(browser)
    wait_text(browser, "#state", lambda t: t == "stopped", 10, "the job stopped")
    assert JobStore(real_redis).get("people")["enabled"] is False
    # and starting it again does not ask
    browser.find_element(By.ID, "start").click()
    wait_text(browser, "#state", lambda t: t == "pending", 10, "the job started")
    assert JobStore(real_redis).get("people")["enabled"] is True


class _ForgingSite(BaseHTTPRequestHandler):
    """Another site's page with a form that posts to the API, as a forger would."""

    target = ""

    def do_GET(self) -> None:
        page = (f'<form method="post" action="{self.target}">'
                '<button id="forge" type="submit">win a prize</button></form>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_forged_post_is_refused_though_the_browser_sends_the_credentials_and_data_is_text(
        pipeline: Any, endpoint: Any, api: ConsoleApi, browser: webdriver.Chrome,
        real_redis: redis.Redis) -> None:
    JobStore(real_redis, LOOPBACK).upsert("people", simple_job(endpoint, "console.forged"))
    # (an endpoint's answer, shown as the last error, with markup in it)
    real_redis.set(keys.last_error("people"), json.dumps(
        {"reason": '<img src="x" id="injected">', "time": 1.0}))
    browser.get(api.signed_in("/ui/"))  # the browser now holds the API's credentials
    shown = wait_text(browser, 'tr[data-job="people"] .error-text', bool, 10, "the jobs table")
    assert shown.startswith('<img src="x" id="injected">')  # as text, not markup
    assert browser.find_elements(By.ID, "injected") == []
    _ForgingSite.target = f"{api.base}/job/people/stop"
    site = ThreadingHTTPServer(("127.0.0.1", 0), _ForgingSite)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        # another site (localhost is not 127.0.0.1) whose visitor clicks its button
        browser.get(f"http://localhost:{site.server_address[1]}/")
        browser.find_element(By.ID, "forge").click()
        refused = wait_text(browser, "body", lambda t: "forbidden" in t or "unauthorized" in t,
                            10, "the API's answer")
    finally:
        site.shutdown()
    # 403, not 401: the credentials went with the request, and the forgery was still refused
    assert "cross-site request refused" in refused, refused
    assert JobStore(real_redis).get("people").get("enabled", True) is True


CRAFTED_STOP = """
const done = arguments[arguments.length - 1];
const token = document.querySelector('meta[name="csrf-token"]').content;
fetch(arguments[0], {method: "POST", headers: {"X-CSRF-Token": token}})
  .then(r => done(r.status), e => done(String(e)));
"""


def test_an_editor_sees_only_its_owners_jobs_and_cannot_stop_anothers_even_by_hand(
        pipeline: Any, endpoint: Any, api: ConsoleApi, browser: webdriver.Chrome,
        real_redis: redis.Redis, tmp_path: Path) -> None:
    # Given an editor of team-a and a viewer of team-a, and a job of team-a and one of team-b
    for name, role in (("ed", "editor"), ("vi", "viewer")):
        status, _ = request(f"{api.base}/user/{name}", "POST", {
            "role": role, "owners": ["team-a"], "password": "a-long-user-password"},
            auth=auth(api))
        assert status == 201
    store = JobStore(real_redis, LOOPBACK)
    store.upsert("people", simple_job(endpoint, "console.a", owner="team-a"))
    store.upsert("visits", simple_job(endpoint, "console.b", id="visits", owner="team-b"))
    # When the editor opens the console
    browser.get(api.signed_in("/ui/", "ed", "a-long-user-password"))
    wait_text(browser, "#job-count", lambda t: t == "(1)", 10, "one job")
    # Then it sees its owner's job only, and no other owner to choose
    assert browser.find_elements(By.CSS_SELECTOR, 'tr[data-job="visits"]') == []
    owners = [o.get_attribute("value") for o in
              Select(browser.find_element(By.ID, "owner")).options]
    assert "team-b" not in owners and "team-a" in owners
    assert "ed (editor)" in text_of(browser, "#who")
    # and its job's page has the buttons an editor may use, but no audit history
    browser.get(api.signed_in("/ui/job/people", "ed", "a-long-user-password"))
    wait_text(browser, "#definition", lambda t: '"id": "people"' in t, 10, "the definition")
    assert browser.find_elements(By.ID, "stop") and browser.find_elements(By.ID, "purge")
    assert browser.find_elements(By.ID, "history") == []
    # And a request crafted in its own console page (its own CSRF token) cannot stop the
    # other owner's job: as if the job did not exist
    crafted = browser.execute_async_script(CRAFTED_STOP, f"{api.base}/job/visits/stop")
    assert crafted == 404
    assert store.get("visits").get("enabled", True) is True
    browser.get(api.signed_in("/ui/job/visits", "ed", "a-long-user-password"))
    assert "job not found" in browser.page_source
    # And a viewer's page has no control at all, and a crafted stop is refused
    viewer = start_browser(tmp_path / "viewer-profile")
    try:
        viewer.get(api.signed_in("/ui/job/people", "vi", "a-long-user-password"))
        wait_text(viewer, "#definition", lambda t: '"id": "people"' in t, 10, "the definition")
        for control in ("start", "stop", "replay-all", "purge", "set-offset"):
            assert viewer.find_elements(By.ID, control) == [], control
        assert viewer.execute_async_script(CRAFTED_STOP, f"{api.base}/job/people/stop") == 403
        assert store.get("people").get("enabled", True) is True
    finally:
        viewer.quit()
