"""The web console in real headless Chromium, as an operator uses it.

The shop runs in a thread (WorkflowEnvironment + uvicorn on 127.0.0.1:<free port>);
Playwright drives Debian's Chromium (``/usr/bin/chromium``, installed by ``.ci/run``).
Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from saga.client import WorkflowHandle
from tests.support.shop import ServedConsole, served_console

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SAGA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "console-token"
JAEGER = "http://jaeger.example:16686"
WAIT_MS = 20_000


@pytest.fixture
def console(tmp_path: Path) -> Iterator[ServedConsole]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)", pytrace=False
        )
    with served_console(
        f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}", api_token=TOKEN, jaeger_url=JAEGER
    ) as served:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        orders = [("order-ok", None), ("order-refund", "shipping"), ("order-declined", "payment")]
        for id, fail_at in orders:
            body = {
                "type": "PlaceOrder",
                "id": id,
                "args": [{"order_id": id, "amount": 99, "fail_at": fail_at}],
            }
            httpx.post(f"{served.url}/api/workflows", json=body, headers=auth).raise_for_status()
        for body in (
            {"type": "PackOrder", "id": "pack-1", "args": ["order-ok"]},
            {"type": "AwaitApproval", "id": "approval-1", "args": ["order-ok"]},
        ):
            httpx.post(f"{served.url}/api/workflows", json=body, headers=auth).raise_for_status()
        yield served  # stopping it opens the warehouse, so the blocked activity ends


def test_operator_filters_inspects_and_cancels_from_the_browser(console: ServedConsole) -> None:
    from playwright.sync_api import ConsoleMessage, Response, expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"HTTP {response.status} for {response.url}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.on("console", on_console)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("response", on_response)

            # The server wants a token: the console asks before its first API call.
            page.goto(f"{console.url}/")
            expect(page.locator("#token-dialog")).to_be_visible()
            page.fill("#token-input", TOKEN)
            page.click("#token-save")
            rows = page.locator("[data-testid=workflow-row]")
            expect(rows).to_have_count(5)
            expect(page.locator("[data-testid=status-count-COMPENSATED] .n")).to_have_text("2")
            expect(page.locator("[data-testid=status-count-RUNNING] .n")).to_have_text("2")
            page.screenshot(path=str(ARTIFACTS / "console-list.png"), full_page=True)

            # Filter to COMPENSATED.
            page.select_option("#filter-status", "COMPENSATED")
            expect(page).to_have_url(re.compile(r"#/\?status=COMPENSATED$"))
            expect(rows).to_have_count(2)
            for status in rows.evaluate_all("rows => rows.map(r => r.dataset.status)"):
                assert status == "COMPENSATED"
            assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.id)")) == [
                "order-declined",
                "order-refund",
            ]
            page.screenshot(path=str(ARTIFACTS / "console-list-compensated.png"), full_page=True)

            # Open one: its steps, then its compensations newest first.
            page.click("a.wf-link:text-is('order-refund')")
            expect(page.locator("[data-testid=workflow-id]")).to_have_text("order-refund")
            steps = page.locator("[data-testid=step-row]")
            expect(steps).to_have_count(5)
            seen = steps.evaluate_all(
                "rows => rows.map(r => [r.dataset.activity, r.dataset.kind, r.dataset.status])"
            )
            assert seen == [
                ["reserve_stock", "step", "COMPLETED"],
                ["charge_payment", "step", "COMPLETED"],
                ["ship_order", "step", "FAILED"],
                ["refund_payment", "compensation", "COMPLETED"],
                ["release_stock", "compensation", "COMPLETED"],
            ]
            expect(page.locator("[data-testid=step-error]")).to_contain_text(
                "ShippingFailed: no courier today"
            )
            expect(page.locator("[data-testid=workflow-status]")).to_have_attribute(
                "data-status", "COMPENSATED"
            )
            expect(page.locator("[data-testid=input]")).to_contain_text('"fail_at": "shipping"')
            trace = page.locator("a.trace")
            assert (trace.get_attribute("href") or "").startswith(
                f"{JAEGER}/search?service=saga-coordinator&tags="
            )
            page.locator("details[data-key=history] > summary").click()
            expect(page.locator("[data-testid=history-event]").first).to_contain_text(
                "WorkflowStarted"
            )
            page.screenshot(path=str(ARTIFACTS / "console-saga.png"), full_page=True)

            # Cancel the running one, confirming in the dialog; the page follows it to the end.
            page.goto(f"{console.url}/#/workflows/pack-1")
            expect(page.locator("[data-testid=workflow-status]")).to_have_attribute(
                "data-status", "RUNNING"
            )
            expect(
                page.locator("[data-testid=step-row][data-activity=wait_for_warehouse]")
            ).to_have_attribute("data-status", "SCHEDULED")
            page.screenshot(path=str(ARTIFACTS / "console-running.png"), full_page=True)
            page.click("[data-testid=action-cancel]")
            expect(page.locator("#action-dialog")).to_be_visible()
            expect(page.locator("#action-title")).to_have_text("Cancel this saga?")
            page.fill("#field-reason", "customer changed their mind")
            page.click("#action-confirm")
            expect(page.locator("[data-testid=workflow-status]")).to_have_attribute(
                "data-status", "CANCELLED"
            )
            expect(
                page.locator("[data-testid=step-row][data-kind=compensation]")
            ).to_have_attribute("data-activity", "release_stock")
            expect(page.locator("[data-testid=action-cancel]")).to_have_count(0)
            page.screenshot(path=str(ARTIFACTS / "console-cancelled.png"), full_page=True)

            # Ask a query (where this version of saga has them).
            if hasattr(WorkflowHandle, "query"):
                page.goto(f"{console.url}/#/workflows/approval-1")
                page.click("[data-testid=action-query]")
                page.fill("#field-name", "state")
                page.click("#action-confirm")
                expect(page.locator("#banner")).to_have_text('Query answered: "waiting"')

            # The cluster page answers too.
            page.click("a[data-nav=cluster]")
            expect(page.locator("[data-testid=outbox-unsent]")).to_have_text("0")
        finally:
            browser.close()

    assert problems == []
