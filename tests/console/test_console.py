"""The console in a real browser: sign in, find a task, open it, cancel it, run it again,
follow a deep link, page through 250 tasks; what a key may not do is not offered."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from services.core.auth import parse_scopes
from services.core.db.keys import SqlKeyStore
from services.core.db.store import SqlTaskStore
from services.core.outputs import AttemptLog
from tests.console.conftest import Console
from tests.support.database import execute
from tests.support.processes import start_worker_process

ALL = "submit,read,cancel,admin"


def _until(browser: WebDriver, check: Callable[[WebDriver], Any], seconds: float = 10) -> Any:
    """What `check` answers once it answers something; a page that re-renders meanwhile
    (a live refresh) makes it look again."""
    ignored = (NoSuchElementException, StaleElementReferenceException)
    wait = WebDriverWait(browser, seconds, poll_frequency=0.05, ignored_exceptions=ignored)
    return wait.until(check)


def _find(browser: WebDriver, css: str, seconds: float = 10) -> WebElement:
    return _until(browser, lambda b: b.find_element(By.CSS_SELECTOR, css), seconds)  # type: ignore[no-any-return]


def _text(browser: WebDriver, css: str) -> str:
    return _until(browser, lambda b: b.find_element(By.CSS_SELECTOR, css).text)  # type: ignore[no-any-return]


async def _key(keys: SqlKeyStore, scopes: str = ALL, tenant: str = "acme") -> str:
    key, _ = await keys.create(tenant, parse_scopes(scopes))
    return key


def _sign_in(browser: WebDriver, console: Console, key: str, path: str = "/ui") -> None:
    browser.get(f"{console.url}/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{console.url}{path}")
    field = _find(browser, "#key")
    field.send_keys(key, Keys.ENTER)  # the keyboard alone signs in
    _until(browser, lambda b: "tenant" in b.find_element(By.ID, "who").text)


def _submit(console: Console, key: str, **fields: Any) -> dict[str, Any]:
    with console.client(key) as client:
        response = client.post("/api/v1/tasks", json={"title": "a task", **fields})
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]


def _status(browser: WebDriver) -> str:
    return _text(browser, "h1 .badge")


def _confirm(browser: WebDriver) -> None:
    _until(browser, lambda b: b.find_element(By.ID, "confirm").get_attribute("open") is not None)
    browser.find_element(By.ID, "confirm-yes").click()


async def test_a_task_is_found_opened_cancelled_and_run_again(
    browser: WebDriver, console: Console, keys: SqlKeyStore
) -> None:
    key = await _key(keys)
    marker = uuid.uuid4().hex[:8]
    task = _submit(console, key, title=f"invoice {marker}", kind="noop", payload={"n": 1234})
    trace_id = uuid.uuid4().hex  # as a traced submit keeps it (tracing is off here)
    await execute(
        console.settings.database_url,
        "UPDATE tasks SET trace_context = $2 WHERE id = $1",
        uuid.UUID(task["id"]),
        json.dumps({"traceparent": f"00-{trace_id}-{'1' * 16}-01"}),
    )
    _submit(console, key, title="something else", kind="noop")
    _sign_in(browser, console, key)
    assert "default" in _text(browser, ".grid")  # the overview's queue card

    browser.find_element(By.CSS_SELECTOR, "a[data-page='tasks']").click()
    search = _find(browser, "input[name='title']")
    search.send_keys(marker, Keys.ENTER)
    _until(browser, lambda b: f"title={marker}" in b.current_url)
    _until(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")) == 1)
    browser.find_element(By.LINK_TEXT, f"invoice {marker}").click()

    _until(browser, lambda b: b.current_url.endswith(f"/ui/tasks/{task['id']}"))
    assert _status(browser) in ("NEW", "PENDING")
    assert '"n": 1234' in _text(browser, "pre")
    trace = browser.find_element(By.LINK_TEXT, "Trace").get_attribute("href")
    assert trace == f"http://jaeger.example/trace/{trace_id}"

    browser.find_element(By.ID, "cancel").click()
    _confirm(browser)
    _until(browser, lambda b: _status(b) == "CANCELLED")
    assert not browser.find_elements(By.ID, "cancel")

    browser.find_element(By.ID, "rerun").click()
    _confirm(browser)
    _until(browser, lambda b: _status(b) == "PENDING")
    with console.client(key) as client:
        stored = client.get(f"/api/v1/tasks/{task['id']}").json()
    assert stored["status"] == "PENDING" and stored["id"] == task["id"]


async def test_a_deep_link_holds_the_filters(
    browser: WebDriver, console: Console, keys: SqlKeyStore
) -> None:
    key = await _key(keys)
    for n in range(3):
        _submit(console, key, title=f"echo {n}", kind="echo", priority="HIGH")
    _submit(console, key, title="a noop", kind="noop", priority="HIGH")
    _submit(console, key, title="a low echo", kind="echo", priority="LOW")
    _sign_in(browser, console, key, "/ui/tasks?kind=echo&priority=HIGH&limit=20")
    _until(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")) == 3)
    titles = [
        row.text.split("\n")[0] for row in browser.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")
    ]
    assert all(title.startswith("echo ") for title in titles), titles
    assert browser.find_element(By.NAME, "kind").get_attribute("value") == "echo"
    assert browser.find_element(
        By.CSS_SELECTOR, "input[name='priority'][value='HIGH']"
    ).is_selected()
    assert not browser.find_element(
        By.CSS_SELECTOR, "input[name='priority'][value='LOW']"
    ).is_selected()
    browser.refresh()  # the address alone makes the same page
    _until(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")) == 3)


ROW_IDS = "return [...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.id || '')"


def _page(browser: WebDriver, size: int, seen: frozenset[str]) -> list[str] | None:
    """The ids of the rows shown, once they are `size` new ones. Read in one step: the
    live page may redraw its rows between two reads."""
    ids: list[str] = browser.execute_script(ROW_IDS)
    return ids if len(ids) == size and not seen.intersection(ids) else None


async def test_two_hundred_fifty_tasks_are_paged_through(
    browser: WebDriver, console: Console, keys: SqlKeyStore
) -> None:
    key = await _key(keys)
    with console.client(key) as client:
        for batch in range(5):
            body = {"tasks": [{"title": f"bulk {batch}-{n}", "kind": "noop"} for n in range(50)]}
            assert client.post("/api/v1/tasks:batch", json=body).json()["created"] == 50
    _sign_in(browser, console, key, "/ui/tasks?limit=100")
    seen: list[str] = []
    for expected in (100, 100, 50):
        seen += _until(browser, lambda b, n=expected, old=frozenset(seen): _page(b, n, old))
        following = browser.find_elements(By.LINK_TEXT, "Next page")
        if expected == 50:
            assert not following
        else:
            following[0].click()
            _until(browser, lambda b: "cursor=" in b.current_url)
    assert len(seen) == len(set(seen)) == 250
    browser.back()  # the browser's own history goes back a page
    _until(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")) == 100)


async def test_a_failed_attempt_shows_its_traceback_and_its_log_lines_as_text(
    browser: WebDriver, console: Console, keys: SqlKeyStore, store: SqlTaskStore
) -> None:
    key = await _key(keys)
    task = _submit(console, key, title="fails loudly", kind="noop")
    task_id = uuid.UUID(task["id"])
    claim = None
    for _ in range(200):  # once the API has queued it, run it as a worker would
        claim = await store.claim_named("w", 30, task_id)
        if claim is not None:
            break
        await asyncio.sleep(0.05)
    assert claim is not None
    log = AttemptLog(65_536)
    log.add(datetime.now(UTC), "INFO", "resizing <img src=x onerror=alert(1)>")
    traceback = 'Traceback (most recent call last):\n  File "job.py", line 3, in resize\n'
    await store.fail(
        task_id,
        claim.attempt,
        "ValueError: <b>bad</b> size",
        None,
        error_type="ValueError",
        traceback=traceback + "ValueError: <b>bad</b> size\n",
        logs=log.window(),
    )
    _sign_in(browser, console, key, f"/ui/tasks/{task['id']}")
    _until(browser, lambda b: _status(b) == "FAILED")
    shown = _find(browser, "#attempts pre.traceback")
    assert "in resize" in shown.text and "ValueError: <b>bad</b> size" in shown.text
    assert "ValueError" in _text(browser, "#attempts code")
    assert not browser.find_elements(By.CSS_SELECTOR, "#attempts b, #attempts img")

    browser.find_element(By.CSS_SELECTOR, "#log-1 summary").click()
    _until(browser, lambda b: "resizing" in b.find_element(By.CSS_SELECTOR, "#log-1 pre").text)
    line = browser.find_element(By.CSS_SELECTOR, "#log-1 pre").text
    assert "INFO" in line and "<img src=x onerror=alert(1)>" in line
    assert not browser.find_elements(By.CSS_SELECTOR, "#attempts img")


async def test_a_read_only_key_is_offered_no_action_and_a_forged_one_is_refused(
    browser: WebDriver, console: Console, keys: SqlKeyStore
) -> None:
    writer = await _key(keys)
    task = _submit(console, writer, title="hands off", kind="noop")
    with console.client(writer) as client:
        client.delete(f"/api/v1/tasks/{task['id']}")
    reader = await _key(keys, "read")
    _sign_in(browser, console, reader, f"/ui/tasks/{task['id']}")
    _until(browser, lambda b: _status(b) == "CANCELLED")
    assert not browser.find_elements(By.ID, "rerun") and not browser.find_elements(By.ID, "cancel")
    nav = browser.find_element(By.ID, "nav")
    assert not nav.find_element(By.CSS_SELECTOR, "a[data-page='keys']").is_displayed()
    assert not nav.find_element(By.CSS_SELECTOR, "a[data-page='queues']").is_displayed()
    forged = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        const key = sessionStorage.getItem("conveyor.key");
        fetch(arguments[0], {method: "POST", headers: {Authorization: "Bearer " + key}})
          .then((r) => r.json().then((body) => done([r.status, body.type])));""",
        f"/api/v1/tasks/{task['id']}:retry",
    )
    assert forged == [403, "urn:conveyor:problem:forbidden"]


def test_with_keys_off_it_opens_straight_away_and_the_page_is_locked_down(
    browser: WebDriver, open_console: Console
) -> None:
    response = open_console.client().get("/ui/tasks?status=FAILED")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    # Nothing is loaded from elsewhere: every address in the page and its script is ours.
    refs = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert refs and all(ref.startswith(("/ui", "#")) for ref in refs), refs
    script = open_console.client().get("/ui/static/app.js").text
    assert set(re.findall(r"https?://[^\s\"'`]+", script)) == {"http://www.w3.org/2000/svg"}
    browser.get(f"{open_console.url}/ui")
    _find(browser, ".grid section")  # the overview, with no key asked for
    assert "tenant default" in _text(browser, "#who")
    assert not browser.find_elements(By.ID, "key")
    unlabelled = browser.execute_script(
        """return [...document.querySelectorAll('input, select, textarea, button')]
          .filter((e) => !(e.labels && e.labels.length) && !e.closest('label')
                         && !e.textContent.trim() && !e.getAttribute('aria-label')).length"""
    )
    assert unlabelled == 0
    browser.get(f"{open_console.url}/ui/tasks")
    _find(browser, "form.filters")
    unlabelled = browser.execute_script(
        """return [...document.querySelectorAll('input, select, textarea')]
          .filter((e) => !(e.labels && e.labels.length)).map((e) => e.name)"""
    )
    assert unlabelled == []
    violations = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    assert violations == []


def test_a_page_of_another_site_cannot_change_anything_even_with_keys_off(
    open_console: Console,
) -> None:
    with open_console.client() as client:
        task = client.post("/api/v1/tasks", json={"title": "mine", "kind": "noop"}).json()
        for headers in (
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
        ):
            for method, path in [
                ("POST", "/api/v1/queues/default:pause"),
                ("DELETE", f"/api/v1/tasks/{task['id']}"),
                ("POST", "/api/v1/tasks"),
            ]:
                answer = client.request(method, path, headers=headers, json={"title": "x"})
                assert answer.status_code == 403, (headers, path, answer.text)
                assert answer.json()["type"] == "urn:conveyor:problem:cross-site"
            assert client.get("/api/v1/tasks", headers=headers).status_code == 200  # reads stay
        queues = client.get("/api/v1/queues").json()["items"]
        assert [q["paused"] for q in queues] == [False]
        assert client.get(f"/api/v1/tasks/{task['id']}").json()["status"] != "CANCELLED"
        same = {"Sec-Fetch-Site": "same-origin", "Origin": open_console.url}
        assert client.delete(f"/api/v1/tasks/{task['id']}", headers=same).status_code == 200


def test_with_keys_off_only_a_loopback_address_is_answered(open_console: Console) -> None:
    with open_console.client() as client:
        for host in ("evil.example:8000", "192.168.1.20"):  # DNS rebinding, the LAN
            answer = client.get("/api/v1/tasks", headers={"Host": host})
            assert answer.status_code == 403, host
            assert answer.json()["type"] == "urn:conveyor:problem:loopback-only"
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert client.get("/api/v1/tasks", headers={"Host": host}).status_code == 200
        assert client.get("/health/live", headers={"Host": "10.0.0.7"}).status_code == 200


async def test_the_workers_page_lists_a_running_worker_by_itself_and_by_its_queue(
    browser: WebDriver, console: Console, keys: SqlKeyStore
) -> None:
    settings = console.settings.model_copy(
        update={
            "worker_id": "worker-on-default",
            "worker_concurrency": 4,
            "task_modules": ["tests.support.kinds"],
        }
    )
    await execute(  # a dead worker whose name was made to be read as HTML
        settings.database_url,
        "INSERT INTO workers (id, host, version, queues, kinds, concurrency, expires_at)"
        " VALUES ('<img src=x onerror=alert(1)>', 'h', '0', '{default}', '{}', 1, now())",
    )
    worker = start_worker_process(settings)
    try:
        _sign_in(browser, console, await _key(keys, "read,platform"), "/ui/workers")
        row = "//table[@id='workers']//tr[td/code='worker-on-default']"
        _until(browser, lambda b: "alive" in b.find_element(By.XPATH, row).text, 30)
        cells = [cell.text for cell in browser.find_elements(By.XPATH, f"{row}/td")]
        assert cells[1:4] == ["alive", "0 / 4", "default"], cells
        assert "<img src=x onerror=alert(1)>" in _text(browser, "#workers")
        queue = "//table[@id='worker-queues']//tr[td[1]='default']/td"
        taking = [cell.text for cell in browser.find_elements(By.XPATH, queue)]
        assert taking[1] == "1" and taking[3] == "worker-on-default", taking
        greet = [
            c.text
            for c in browser.find_elements(By.XPATH, "//table[@id='kinds']//tr[td/code='greet']/td")
        ]
        assert greet[1:5] == [
            "default",
            "1",
            "1",
            "Greets someone by name: a kind whose payload has a model.",
        ], greet
        browser.find_element(By.XPATH, "//table[@id='kinds']//tr[td/code='greet']//summary").click()
        assert '"required": [\n    "name"\n  ]' in _text(browser, "#kinds pre")
        assert not browser.find_elements(By.CSS_SELECTOR, "main img")
    finally:
        worker.terminate()
        worker.wait(30)
    _sign_in(browser, console, await _key(keys, "read"), "/ui/workers")
    assert "platform scope" in _text(browser, "main p")
    nav = browser.find_element(By.ID, "nav")
    assert not nav.find_element(By.CSS_SELECTOR, "a[data-page='workers']").is_displayed()


async def test_a_task_opens_by_its_id_from_any_page_and_the_list_fits_a_phone(
    browser: WebDriver, console: Console, keys: SqlKeyStore
) -> None:
    key = await _key(keys)
    task = _submit(console, key, title="open me by id", kind="noop")
    _submit(console, key, title="a neighbour with a rather long title " * 3, kind="noop")
    _sign_in(browser, console, key, "/ui/schedules")
    # Pasted with what surrounds it (a log line), in capitals: the id is found in it.
    jump = _find(browser, "#jump-id")
    jump.send_keys(f"task_id={task['id'].upper()} failed", Keys.ENTER)
    _until(browser, lambda b: b.current_url.endswith(f"/ui/tasks/{task['id']}"))
    # The address changes first; the page follows once its calls are answered.
    _until(browser, lambda b: "open me by id" in b.find_element(By.CSS_SELECTOR, "h1").text)
    assert jump.get_attribute("value") == ""
    jump.send_keys("not an id", Keys.ENTER)
    assert "No task id in “not an id”" in _text(browser, "#notice")
    assert browser.current_url.endswith(f"/ui/tasks/{task['id']}")

    browser.set_window_size(390, 844)  # a phone held upright
    try:
        _until(browser, lambda b: b.execute_script("return window.innerWidth") <= 400)
        browser.find_element(By.CSS_SELECTOR, "a[data-page='tasks']").click()
        _until(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")) == 2)
        page_width, window_width = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert page_width <= window_width  # nothing to scroll sideways
        link = browser.find_element(By.LINK_TEXT, "open me by id")
        status = browser.find_element(By.CSS_SELECTOR, f"tr[data-id='{task['id']}'] .badge")
        assert link.is_displayed() and status.is_displayed()
        # The tasks come first: the filters fold away, and the rows are on the first screen.
        assert not browser.find_element(By.CSS_SELECTOR, "input[name='title']").is_displayed()
        top, height = browser.execute_script(
            "return [arguments[0].getBoundingClientRect().top, window.innerHeight]", link
        )
        assert top < height
        assert _find(browser, "#jump-id").is_displayed()
    finally:
        browser.set_window_size(1280, 900)
