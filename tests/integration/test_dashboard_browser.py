"""The dashboard as a person uses it: a real headless Chromium (Debian's), driven by
Playwright, on a dashboard served over HTTP, with workers running jobs on a real Redis.

Set ``SPINACH_SCREENSHOTS`` to a folder (``docs/images``) to save a screenshot of
each page there. Without Chromium at ``/usr/bin/chromium`` the tests are skipped,
unless ``SPINACH_REQUIRE_BROWSER`` is set (``.ci/run`` sets it): then they fail.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from spinach import Engine
from spinach.dashboard import Dashboard
from spinach.testing import wait_for

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("SPINACH_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)  # a loaded machine; the job page reloads every 2 s
    yield page
    context.close()


@pytest.fixture
def engine(redis_engine: Engine) -> Engine:
    return redis_engine


@pytest.fixture
def served(engine: Engine) -> Iterator[str]:
    """The engine's dashboard on a free loopback port; its base URL."""
    server = make_server("127.0.0.1", 0, Dashboard(engine, refresh=0), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def screenshot(page: Any, name: str, full_page: bool = True) -> None:
    folder = os.environ.get("SPINACH_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"dashboard-{name}.png"), full_page=full_page)


def test_requeue_a_failed_job_and_see_it_succeed(engine: Engine, served: str, page: Any) -> None:
    from playwright.sync_api import expect

    attempts: list[int] = []

    @engine.task(name="charge", max_retries=0, keep_result=timedelta(hours=1))
    def charge(order: int) -> str:
        attempts.append(order)
        if len(attempts) == 1:
            raise ConnectionError("payment API down")
        return f"charged order {order}"

    engine.task(lambda: None, name="ping")
    for _ in range(20):
        engine.schedule("ping")
    job = engine.schedule("charge", 42)
    engine.schedule_at("ping", engine.broker.now() + timedelta(hours=1))
    engine.start_workers(number=2, block=False)
    try:
        wait_for(lambda: engine.broker.count_jobs().failed == 1, timeout=20)

        page.goto(served + "/")
        failures = page.locator("#latest-failures")
        expect(failures).to_contain_text("ConnectionError: payment API down")
        expect(page.locator(".legend")).to_contain_text("started (21)")
        expect(page.locator("#queues")).to_contain_text("spinach")
        expect(page.locator("#workers")).to_contain_text(engine.broker.worker_id)
        screenshot(page, "overview")

        failures.get_by_role("link", name=str(job.id)).click()
        expect(page.locator("#status")).to_have_text("FAILED")
        expect(page.locator("#args")).to_contain_text("42")
        expect(page.locator("#traceback")).to_contain_text("ConnectionError: payment API down")
        screenshot(page, "job-failed")

        page.get_by_role("button", name="Requeue").click()
        expect(page.locator(".notice")).to_have_text("Requeued.")
        # The page reloads every 2 s while the job has not ended.
        expect(page.locator("#status")).to_have_text("SUCCEEDED")
        expect(page.locator("#result")).to_contain_text("charged order 42")
        screenshot(page, "job-succeeded")
    finally:
        engine.stop_workers()
    assert attempts == [42, 42]


def test_failed_jobs_are_paged_requeued_and_purged(engine: Engine, served: str, page: Any) -> None:
    from playwright.sync_api import expect

    @engine.task(name="import_row", max_retries=0)
    def import_row(row: int) -> None:
        raise ValueError(f"row {row} has no email")

    jobs = [engine.schedule("import_row", row) for row in range(55)]
    engine.start_workers(number=2, block=False, stop_when_queue_empty=True)
    wait_for(lambda: engine.broker.count_jobs().failed == 55, timeout=30)
    engine.stop_workers()

    page.goto(served + "/failed")
    expect(page.locator("main")).to_contain_text("55 in the failed store")
    expect(page.locator("#failed tbody tr")).to_have_count(50)
    screenshot(page, "failed", full_page=False)
    page.get_by_role("link", name="Older").click()
    expect(page.locator("#failed tbody tr")).to_have_count(5)

    first, second = page.locator("#failed tbody tr input[type=checkbox]").all()[:2]
    first.check()
    second.check()
    page.get_by_role("button", name="Purge selected").click()
    expect(page.locator(".notice")).to_have_text("Purged 2 job(s).")
    assert engine.broker.count_jobs().failed == 53

    page.get_by_role("button", name="Requeue all 53").click()
    expect(page.locator(".notice")).to_have_text("Requeued 53 job(s).")
    expect(page.locator("main")).to_contain_text("No failed job")
    counts = engine.broker.count_jobs()
    assert (counts.failed, counts.queued) == (0, {"spinach": 53})
    assert len({str(j.id) for j in jobs}) == 55


def test_cancel_a_queued_job_from_its_page(engine: Engine, served: str, page: Any) -> None:
    from playwright.sync_api import expect

    engine.task(lambda: None, name="later")
    job = engine.schedule_at("later", engine.broker.now() + timedelta(hours=1))

    page.goto(served + "/")
    page.get_by_label("Job id").fill(str(job.id))
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#status")).to_have_text("WAITING")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".notice")).to_have_text("Cancelled.")
    expect(page.locator("#status")).to_have_text("CANCELLED")
    assert engine.broker.inspect().queues == {}
