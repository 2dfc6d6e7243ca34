"""/docs and /redoc render in Chromium with no network but the API's own address: every
file they load comes from the API, and their Content-Security-Policy refuses nothing they
need."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.console.conftest import Console


def _loaded(browser: WebDriver, url: str, css: str) -> str:
    browser.get_log("browser")  # what earlier pages logged is not this one's
    browser.get(url)
    WebDriverWait(browser, 30).until(
        lambda b: any(e.text.strip() for e in b.find_elements(By.CSS_SELECTOR, css))
    )
    return next(e.text for e in browser.find_elements(By.CSS_SELECTOR, css) if e.text.strip())


# ReDoc's sidebar always asks for Redocly's logo from its CDN: the policy refuses it (no
# request leaves the browser) and ReDoc then leaves the image out.
BADGE = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _outside(browser: WebDriver, origin: str) -> list[str]:
    """What the page asked for anywhere but `origin`, and what the browser refused, but
    ReDoc's badge."""
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    refused = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"]
    ]
    found = [name for name in loaded if not name.startswith(origin)] + refused
    return [text for text in found if BADGE not in text]


@pytest.mark.parametrize(
    ("path", "title", "operation"),
    [
        ("/docs", ".swagger-ui .info .title", "#operations-tasks-submitTask"),
        ("/redoc", "h1", "[data-section-id='tag/tasks/operation/submitTask']"),
    ],
)
def test_the_api_docs_render_with_no_network(
    offline_browser: WebDriver, open_console: Console, path: str, title: str, operation: str
) -> None:
    heading = _loaded(offline_browser, open_console.url + path, title)
    assert heading.startswith("Conveyor"), heading
    assert offline_browser.find_elements(By.CSS_SELECTOR, operation)
    assert _outside(offline_browser, open_console.url) == []
