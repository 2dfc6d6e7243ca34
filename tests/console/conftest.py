"""A real API process, keys on, and Debian's Chromium driven by Selenium, for the console."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from services.core.settings import Settings
from tests.support.processes import start_process, wait_until_ready
from tests.support.services import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser(*arguments: str) -> WebDriver:
    if not shutil.which(CHROMIUM) or not shutil.which(CHROMEDRIVER):
        pytest.fail(
            "Chromium is missing: .ci/install-chromium (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        *arguments,
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    driver = _browser()
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def offline_browser() -> Iterator[WebDriver]:
    """A browser that resolves no host name: only 127.0.0.1 is reached."""
    driver = _browser("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@dataclass(frozen=True)
class Console:
    """The API process the browser talks to, and a client for seeding it."""

    url: str
    settings: Settings

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


def serve(settings: Settings) -> Iterator[Console]:
    port = free_port()
    settings = settings.model_copy(update={"api_port": port})
    process = start_process(settings, "api")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process)
        yield Console(url, settings)
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture
def console(settings: Settings) -> Iterator[Console]:
    """The API with keys on (no worker: tasks stay queued unless a test runs them)."""
    secured = settings.model_copy(
        update={
            "auth_enabled": True,
            "rate_limit": "",
            "trace_url": "http://jaeger.example/trace/{trace_id}",
        }
    )
    yield from serve(secured)


@pytest.fixture
def open_console(settings: Settings) -> Iterator[Console]:
    """The API with keys off, as `conveyor dev` runs it on a laptop."""
    yield from serve(settings)
