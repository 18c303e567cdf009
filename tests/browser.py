"""A real headless browser (Debian's chromium and chromedriver, driven by Selenium) and the API
served by its own process, for the console's tests, its screenshots and its benchmark."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from helpers import spawn, stop, wait_for
from rest_consumer.devtools.services import free_port

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
USER, PASSWORD = "admin", "console-pw-0123"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1400,1000")
"""The closed network refuses Chromium's background connections: those flags keep it quiet."""


def start_browser(profile: Path) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile; fails (never skips) when it is missing."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(program) is None:
            raise RuntimeError(f"{program} not found: scripts/setup installs Debian's chromium "
                               "and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


class ConsoleApi:
    """``rest-consumer api`` in its own process, with Basic credentials for the browser."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = {**env, "API_PORT": str(self.port), "API_USER": USER,
                    "API_PASSWORD": PASSWORD}
        with open(log, "w") as out:
            self.proc = spawn("api", env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.log = log
        wait_for(lambda: self._ready(), 60, what="the API")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signed_in(self, path: str, user: str = USER, password: str = PASSWORD) -> str:
        """``path`` with the credentials in the URL: the browser keeps them for the origin."""
        return f"http://{user}:{password}@127.0.0.1:{self.port}{path}"

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.base}/readyz", timeout=3) as response:
            return bool(response.status == 200)

    def stop(self) -> None:
        stop(self.proc)


def text_of(browser: webdriver.Chrome, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def wait_text(browser: webdriver.Chrome, css: str, check: Any, timeout: float = 30,
              what: str = "") -> str:
    """Wait until the text of the element at ``css`` passes ``check``; return it."""
    found: list[str] = []

    def seen(_: Any) -> bool:
        try:
            found[:] = [text_of(browser, css)]
        except Exception:  # noqa: BLE001 - not on the page yet, or re-rendered meanwhile
            return False
        return bool(check(found[0]))

    try:
        WebDriverWait(browser, timeout, poll_frequency=0.2).until(seen)
    except Exception as e:
        raise AssertionError(f"timed out waiting for {what or css}: last seen "
                             f"{found[0] if found else None!r}") from e
    return found[0]
