"""The ``rest-consumer`` command line; the only place that configures logging."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from rest_consumer.core import config, logs
from rest_consumer.core.errors import RestConsumerError
from rest_consumer.core.processes import wait_until_signalled

CELERY_FAILURE = 1
"""Celery's exit code after an unrecoverable error (``EX_FAILURE``)."""

WORKER_RESTART_SECONDS = 2.0


def _settings() -> config.Settings:
    try:
        settings = config.from_env()
    except RestConsumerError as e:
        raise click.ClickException(str(e)) from e
    logs.configure(settings.log_level, settings.log_format)
    return settings


@click.group()
@click.version_option(package_name="rest-consumer")
def main() -> None:
    """Deliver Aether records from Apache Kafka to REST endpoints."""


@main.command()
def services() -> None:
    """Start local Redis and Kafka on free loopback ports until SIGINT/SIGTERM."""
    from rest_consumer.devtools.services import LocalServices

    _settings()
    local = LocalServices()
    try:
        local.start()
    except RestConsumerError as e:
        raise click.ClickException(str(e)) from e
    try:
        for name, value in local.env().items():
            click.echo(f"{name}={value}")
        sys.stdout.flush()
        wait_until_signalled()
    finally:
        local.stop()


@main.command()
@click.option("--workers", default=1, show_default=True, help="gunicorn worker processes")
@click.option("--threads", default=8, show_default=True, help="threads per worker")
def api(workers: int, threads: int) -> None:
    """Serve the API with gunicorn on API_HOST:API_PORT."""
    from rest_consumer.web.app import create_app

    settings = _settings()
    try:
        app = create_app(settings)
    except RestConsumerError as e:
        raise click.ClickException(str(e)) from e
    _serve(app, settings, workers, threads)


def _serve(app: Any, settings: config.Settings, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.api_host}:{settings.api_port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", "-")
            self.cfg.set("graceful_timeout", 10)

        def load(self) -> Any:
            return app

    _Server().run()


@main.command()
def reader() -> None:
    """Run one reader thread per enabled job until SIGINT/SIGTERM."""

    from rest_consumer.broker.celery_app import create_celery, make_dispatcher, make_retry_publisher
    from rest_consumer.reader.manager import ReaderManager

    settings = _settings()
    client = settings.redis_client(socket_timeout=10, health_check_interval=30)
    celery_app = create_celery(settings)
    manager = ReaderManager(settings, client, make_dispatcher(celery_app),
                            make_retry_publisher(celery_app))
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    manager.serve(stopping)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("-Q", "--queues", default="rest_consumer", show_default=True,
              help="comma-separated Celery queues to serve")
@click.option("--pool", default="prefork", show_default=True,
              help="Celery pool: prefork spreads decoding, mapping and sending over all cores "
                   "(measured in bench/); threads for many slow endpoints per process")
@click.option("-c", "--concurrency", default=max(4, 2 * (os.cpu_count() or 1)),
              show_default="2 x CPUs, at least 4")
@click.pass_context
def worker(ctx: click.Context, queues: str, pool: str, concurrency: int) -> None:
    """Run a Celery worker for ``deliver`` (extra arguments go to ``celery worker``)."""
    settings = _settings()
    from celery.signals import worker_init, worker_shutting_down

    from rest_consumer.tasks import app

    workers: list[Any] = []
    asked_to_stop: list[object] = []
    worker_init.connect(lambda sender, **_: workers.append(sender), weak=False)
    worker_shutting_down.connect(lambda **_: asked_to_stop.append(True), weak=False)
    app.worker_main(["worker", "-Q", queues, "--pool", pool, "-c", str(concurrency),
                     "--loglevel", settings.log_level, "--without-gossip", "--without-mingle",
                     *ctx.args])
    code = workers[-1].exitcode if workers else 0  # worker_main drops Celery's exit code
    if code == CELERY_FAILURE and not asked_to_stop:
        # Celery gave up on an error nobody asked for; seen here: kombu's Redis transport
        # raising AttributeError while closing a channel after Redis died. A supervisor
        # would restart the worker; so does this, in place (same pid, nothing orphaned).
        click.echo(f"rest-consumer: the Celery worker stopped on an unrecoverable error; "
                   f"restarting it in {WORKER_RESTART_SECONDS:.0f} s", err=True)
        time.sleep(WORKER_RESTART_SECONDS)
        os.execv(sys.executable, [sys.executable, "-m", "rest_consumer", *sys.argv[1:]])
    sys.exit(code or 0)


@main.command()
@click.argument("topic")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--demo", type=int, default=0, help="also send N synthetic Aether Person records")
def produce(topic: str, files: tuple[Path, ...], demo: int) -> None:
    """Send Avro container files, JSON-lines files or demo records to TOPIC."""
    from rest_consumer.devtools import producing

    settings = _settings()
    if not files and not demo:
        raise click.UsageError("give FILES, --demo N, or both")
    try:
        values = [v for path in files for v in producing.messages_from_file(path)]
    except (ValueError, UnicodeDecodeError) as e:
        raise click.ClickException(str(e)) from e
    values += list(producing.demo_messages(demo))
    writer = producing.TopicWriter(settings.kafka_client_config())
    with click.progressbar(values, label=f"producing to {topic}", file=sys.stderr) as bar:
        for value in bar:
            writer.write(topic, value)
    undelivered = writer.close()
    if undelivered or writer.errors:
        raise click.ClickException(f"{undelivered} undelivered; errors: {writer.errors[:3]}")
    click.echo(f"produced {len(values)} message(s) to {topic}")


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", default=5555, show_default=True)
def flower(address: str, port: int) -> None:
    """Run Flower with its own basic auth (FLOWER_BASIC_AUTH=user:password): it can shut
    workers down, so it is an admin's tool and never shares the API's password."""
    _settings()
    auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    if ":" not in auth:
        raise click.ClickException("set FLOWER_BASIC_AUTH=user:password (Flower's own "
                                   "credentials: it can shut workers down)")
    problem = config.weak_secret_problem("the Flower password", auth.partition(":")[2],
                                         config.MIN_PASSWORD_CHARS)
    if problem is not None:
        raise click.ClickException(problem)
    # Through the environment, not argv, so the password never shows in `ps`.
    os.environ["FLOWER_BASIC_AUTH"] = auth
    from rest_consumer.tasks import app

    app.start(["flower", f"--address={address}", f"--port={port}"])


@main.command()
def dev() -> None:
    """A complete local pipeline with a demo job, endpoint and data; Ctrl-C stops it all."""
    from rest_consumer.devtools.devrun import DevPipeline

    _settings()
    try:
        DevPipeline().run()
    except RestConsumerError as e:
        raise click.ClickException(str(e)) from e
