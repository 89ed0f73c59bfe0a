"""The live page in a real browser: Debian's headless Chromium driven by selenium.

Skipped (with the reason) when Chromium, chromedriver or selenium is missing on a
developer's machine; under CI=true a missing browser fails instead (.ci/run
installs chromium and chromium-driver).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from synapse.embedded import free_port
from tests.gateway.process import GatewayProcess

pytestmark = pytest.mark.slow

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[dev])"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if not os.path.exists(CHROMEDRIVER):
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium session (skipped locally without one; a failure under CI)."""
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,900")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def page_rows(driver: Any) -> list[tuple[str, str]]:
    """(stream, entry id) of every row on the page, oldest first."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows tr'))"
        ".map(tr => [tr.dataset.stream, tr.dataset.entryId]);"
    )
    return [tuple(r) for r in reversed(rows)]


def publish(r: redis.Redis, stream: str, n: int, start: int) -> list[tuple[str, str]]:
    out = []
    for i in range(start, start + n):
        entry_id = r.xadd(stream, {"type": "model.ready", "data": json.dumps({"model_id": i})})
        out.append((stream, entry_id.decode()))
    return out


def test_live_page_shows_new_events_and_resumes_after_the_server_drops_it(
    browser: Any, url: str, tmp_path: Path
) -> None:
    """Events appear as published; across a gateway restart the page misses none, repeats none."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--url", url, "--listen", f"127.0.0.1:{port}"]
    r = redis.Redis.from_url(url)
    gw = GatewayProcess(args, tmp_path / "gw1.log")
    try:
        gw.wait_ready(base)
        browser.get(f"{base}/?stream=live-a&stream=live-b")
        wait_until(
            lambda: browser.find_element("id", "state").text == "live", "the page to go live"
        )
        published = publish(r, "live-a", 4, 0) + publish(r, "live-b", 3, 100)
        wait_until(lambda: len(page_rows(browser)) >= 7, "the first events on the page")
        assert sorted(page_rows(browser)) == sorted(published)

        assert gw.stop() == 0  # the server drops the connection
        wait_until(lambda: browser.find_element("id", "state").text != "live", "the page to notice")
        published += publish(r, "live-b", 5, 200) + publish(r, "live-a", 5, 300)
        gw = GatewayProcess(args, tmp_path / "gw2.log")
        gw.wait_ready(base)
        wait_until(lambda: len(page_rows(browser)) >= 17, "the missed events after resuming")
        published += publish(r, "live-a", 2, 400)
        wait_until(lambda: len(page_rows(browser)) >= 19, "live events after resuming")
        time.sleep(0.3)  # anything extra (a repeat) would arrive with them
        rows = page_rows(browser)
        assert len(rows) == len(set(rows)) == 19
        assert sorted(rows) == sorted(published)
        for stream in ("live-a", "live-b"):  # each stream in its own order
            assert [e for s, e in rows if s == stream] == [e for s, e in published if s == stream]
        assert browser.find_element("id", "state").text == "live"
    finally:
        gw.stop()
        r.close()


def visible_types(driver: Any) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows tr')).filter(t => !t.hidden)"
        ".map(t => t.dataset.type);"
    )


def test_picker_filters_and_pause_work_on_the_page(browser: Any, url: str, tmp_path: Path) -> None:
    """The picker lists served streams; the type box and stream chips hide rows; pause holds."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    r = redis.Redis.from_url(url)
    r.xadd("picked", {"type": "a.b", "data": "{}"})
    r.xadd("synapse:dlq", {"type": "a.b", "data": "{}"})
    gw = GatewayProcess(["--url", url, "--listen", f"127.0.0.1:{port}"], tmp_path / "gw.log")
    try:
        gw.wait_ready(base)
        browser.get(f"{base}/")
        boxes = wait_until(
            lambda: browser.find_elements("css selector", "#list input"), "the picker list"
        )
        assert [b.get_attribute("value") for b in boxes] == ["picked"]  # no internal stream
        boxes[0].click()
        browser.find_element("id", "go").click()
        wait_until(lambda: browser.find_element("id", "state").text == "live", "live")
        r.xadd("picked", {"type": "model.ready", "data": "{}"})
        r.xadd("picked", {"type": "inference.done", "data": "{}"})
        wait_until(lambda: len(page_rows(browser)) == 2, "two rows")
        browser.find_element("id", "filter").send_keys("model.*")
        assert visible_types(browser) == ["model.ready"]
        browser.find_element("id", "filter").clear()
        browser.find_element("id", "filter").send_keys(" ")  # an input event: filter off
        assert len(visible_types(browser)) == 2
        browser.find_element("css selector", '.chip[data-stream="picked"]').click()
        assert visible_types(browser) == []  # the stream chip hides its rows
        browser.find_element("css selector", '.chip[data-stream="picked"]').click()
        browser.find_element("id", "pause").click()
        r.xadd("picked", {"type": "held.one", "data": "{}"})
        wait_until(
            lambda: "1 held" in browser.find_element("id", "paused").text, "the held counter"
        )
        assert len(page_rows(browser)) == 2  # paused: nothing new rendered
        browser.find_element("id", "pause").click()
        wait_until(lambda: len(page_rows(browser)) == 3, "held events shown on resume")
        assert visible_types(browser)[0] == "held.one"
    finally:
        gw.stop()
        r.close()
