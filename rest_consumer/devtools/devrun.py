"""``rest-consumer dev``: the whole pipeline on one machine, for a newcomer, in one command."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click

from rest_consumer.core import config
from rest_consumer.core.errors import ServiceError
from rest_consumer.core.processes import die_with_parent, wait_until_signalled
from rest_consumer.devtools import producing
from rest_consumer.devtools.services import STOP_TIMEOUT, LocalServices, free_port
from rest_consumer.state.jobfiles import load_job_files
from rest_consumer.state.store import JobStore

DEMO_JOB = "demo-people"
DEMO_TOPIC = "demo.Person"
DEMO_RECORDS = 50
READY_TIMEOUT = 60.0


def _port(preferred: int) -> int:
    """``preferred`` when nothing listens there, else any free port."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


class DemoEndpoint:
    """A tiny receiver that prints each delivery as it arrives."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.count += 1
                click.secho(f"  delivered #{endpoint.count}: {self.command} {self.path} "
                            f"{body.decode(errors='replace')[:100]}", fg="green")
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


class DevPipeline:
    """Starts services (unless configured), API, reader, worker, Flower and a demo endpoint."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.services: LocalServices | None = None
        self.logs = Path(os.environ.get("DEV_LOG_DIR", ".dev-logs"))

    def run(self) -> None:
        try:
            env = self._start_everything()
            self._announce(env)
            wait_until_signalled()
        finally:
            click.echo("\nstopping…", err=True)
            self._stop_everything()

    def _start_everything(self) -> dict[str, str]:
        env = dict(os.environ)
        if not (env.get("REDIS_URL") and env.get("KAFKA_BOOTSTRAP_SERVERS")):
            click.echo("starting local Redis and Kafka (first run: Maven fetches the jars)…")
            self.services = LocalServices().start()
            env.update(self.services.env())
        # The demo endpoint is on loopback, which is refused unless a network entry names it.
        env.setdefault("DESTINATION_ALLOWLIST", "127.0.0.0/8")
        env.setdefault("API_USER", "admin")
        if not env.get("API_PASSWORD"):
            env["API_PASSWORD"] = secrets.token_urlsafe(12)
        if not env.get("FLOWER_BASIC_AUTH"):  # Flower's own, never the API's password
            env["FLOWER_BASIC_AUTH"] = f"flower:{secrets.token_urlsafe(12)}"
        env["API_PORT"] = str(_port(int(env.get("API_PORT") or config.DEFAULT_API_PORT)))
        env["FLOWER_PORT"] = str(_port(int(env.get("FLOWER_PORT") or 5555)))
        env.setdefault("PYTHONUNBUFFERED", "1")
        click.echo(f"  Redis {env['REDIS_URL']}  Kafka {env['KAFKA_BOOTSTRAP_SERVERS']}")
        self.endpoint = DemoEndpoint(_port(8000))
        self._prepare_demo_job(env)
        self.logs.mkdir(exist_ok=True)
        for name, args in (("api", ["api"]), ("reader", ["reader"]), ("worker", ["worker"]),
                           ("flower", ["flower", "--port", env["FLOWER_PORT"]])):
            self._spawn(name, args, env)
        self._wait_ready(env)
        self._produce_demo(env)
        return env

    def _prepare_demo_job(self, env: dict[str, str]) -> None:
        settings = config.from_env(env)
        store = JobStore.for_settings(settings.redis_client(), settings)
        store.ensure_loaded()
        load_job_files(store, settings.jobs_dir)
        job = store.find(DEMO_JOB)
        if job is not None and not job["url"].startswith(self.endpoint.url):
            # the demo endpoint could not have port 8000: point the demo job at it
            path = job["url"].split("/", 3)[3]
            store.upsert(DEMO_JOB, {**job, "url": f"{self.endpoint.url}/{path}"})

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        with open(self.logs / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "rest_consumer", *args], env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        click.echo(f"  started {name} (log: {self.logs / (name + '.log')})")

    def _wait_ready(self, env: dict[str, str]) -> None:
        checks = {"api": f"http://127.0.0.1:{env['API_PORT']}/readyz",
                  "flower": f"http://127.0.0.1:{env['FLOWER_PORT']}/healthcheck"}
        deadline = time.monotonic() + READY_TIMEOUT
        for name, url in checks.items():
            while not _answers(url):
                for proc_name, proc in self.procs.items():
                    if proc.poll() is not None:
                        raise ServiceError(f"{proc_name} exited; see {self.logs}/{proc_name}.log")
                if time.monotonic() > deadline:
                    raise ServiceError(f"{name} not ready within {READY_TIMEOUT:.0f}s")
                time.sleep(0.3)
            click.echo(f"  {name} ready")

    def _produce_demo(self, env: dict[str, str]) -> None:
        settings = config.from_env(env)
        writer = producing.TopicWriter(settings.kafka_client_config())
        for value in producing.demo_messages(DEMO_RECORDS):
            writer.write(DEMO_TOPIC, value)
        writer.close()
        click.echo(f"  produced {DEMO_RECORDS} demo Person records to {DEMO_TOPIC} "
                   "(approved ones are delivered; phone and national_id are masked)")

    def _announce(self, env: dict[str, str]) -> None:
        api = f"http://127.0.0.1:{env['API_PORT']}"
        user, password = env["API_USER"], env["API_PASSWORD"]
        click.secho(f"""
rest-consumer is running.
  API     {api}   (user {user!r}, password {password!r})
  Flower  http://127.0.0.1:{env['FLOWER_PORT']}   (FLOWER_BASIC_AUTH {env['FLOWER_BASIC_AUTH']!r})
  demo endpoint {self.endpoint.url}
Try:
  export REDIS_URL={env["REDIS_URL"]} KAFKA_BOOTSTRAP_SERVERS={env["KAFKA_BOOTSTRAP_SERVERS"]}
  curl -u {user}:{password} {api}/job/{DEMO_JOB}/status
  .venv/bin/rest-consumer produce {DEMO_TOPIC} --demo 20
Ctrl-C stops everything.
""", fg="cyan")

    def _stop_everything(self) -> None:
        """SIGTERM every process at once; whatever is still running after one shared
        ``STOP_TIMEOUT`` is killed, so Ctrl-C never waits for each process in turn."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, proc in self.procs.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                click.echo(f"  {name} did not stop within {STOP_TIMEOUT:.0f}s; killing it",
                           err=True)
                proc.kill()
                proc.wait()
        if self.services is not None:
            self.services.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
