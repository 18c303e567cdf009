"""Baseline "naive Celery": default settings, prefork, a task that POSTs with requests."""

from __future__ import annotations

import os

import requests
from celery import Celery

app = Celery("naive", broker=os.environ["REDIS_URL"])


@app.task(name="naive.post")
def post(url: str, body: str) -> None:
    requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)


@app.task(name="naive.noop")
def noop(body: str) -> None:
    """For the ceiling: the cheapest possible task."""
