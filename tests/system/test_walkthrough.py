"""The admin in real Chromium, walked as new users would: an admin follows
the first-run checklist to connect an X account and adds a marketer; the
marketer adds a site, installs its snippet, maps an event (wrongly at
first), tries it in test mode with a test event, watches a real beacon
event in the debugger, fixes the mapping with the live preview, and sees
the conversion delivered and its match quality. CSRF is on, as in
production.

Screenshots go to a temporary directory, or to XTAG_SCREENSHOTS (the README's
come from `XTAG_SCREENSHOTS=docs/screenshots make test`)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.fake_x import FakeX
from tests.support import factories
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, Shop, needs_chromium
from tests.support.shop import EVENT, PIXEL
from xtag.extensions import db
from xtag.models import ReceivedEvent
from xtag.pipeline import consuming

PASSWORD = "correct horse battery"


@pytest.fixture
def x(app, live_server):
    with FakeX() as server:
        server.oauth1_callback_urls = {f"{live_server}/connections/connect/oauth1/callback"}
        app.config.update(
            WTF_CSRF_ENABLED=True,
            XTAG_X_API_BASE=server.base_url,
            XTAG_X_OAUTH1_BASE=server.base_url,
            XTAG_X_TIMEOUT_SECONDS=5,
        )
        yield server


@pytest.fixture
def shots(tmp_path):
    directory = Path(os.environ.get("XTAG_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Browser:
    """One user's browser: a page, and every console error it saw."""

    def __init__(self, chromium, base: str, shots: Path):
        self.context = chromium.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.base, self.shots, self.errors = base, shots, []
        self.page.on(
            "console",
            lambda m: m.type == "error" and self.errors.append(f"{self.page.url}: {m.text}"),
        )
        self.page.on(
            "response",
            lambda r: r.status >= 400 and self.errors.append(f"{r.status} {r.url}"),
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def go(self, path: str) -> None:
        self.page.goto(self.base + path)

    def log_in(self, email: str) -> None:
        self.go("/login")
        self.page.fill("input[name=email]", email)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.click("button:text('Log in')")
        self.page.wait_for_url(self.base + "/")

    def nav(self, name: str) -> None:
        self.page.click(f"nav a:text-is('{name}')")

    def flash(self) -> str:
        return self.page.inner_text(".flash")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


def recorded(deliver, orders: int, timeout: float = 20.0) -> None:
    """Run the worker until the beacon's orders (sent in the background) are
    recorded and everything due is delivered."""
    deadline = time.monotonic() + timeout
    while True:
        deliver()
        db.session.remove()
        count = db.session.scalar(
            select(func.count(ReceivedEvent.id)).where(
                ReceivedEvent.event_name == "Order Completed"
            )
        )
        if count >= orders:
            deliver()
            return
        assert time.monotonic() < deadline, f"{count} of {orders} orders recorded"
        time.sleep(0.2)


@pytest.fixture
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@needs_chromium
def test_from_login_to_a_delivered_conversion(app, ctx, live_server, x, chromium, shots, deliver):
    factories.user("admin@example.com", role="admin", password=PASSWORD)
    db.session.remove()

    # The dashboard leads the way; the admin connects the X account by
    # signing in on X, and adds a marketer.
    consuming.Consumer(app, name="walkthrough").heartbeat()  # deliver() is this test's worker
    admin = Browser(chromium, live_server, shots)
    admin.log_in("admin@example.com")
    checklist = admin.page.locator(".checklist")
    assert checklist.locator("li.done").count() == 0 and checklist.locator("li").count() == 5
    admin.shot("first-run")
    admin.page.click(".checklist a:text('Connect an X account')")
    admin.page.click("button:text('Connect with OAuth 1.0a')")
    admin.page.fill("input[name=name]", "Brand account")
    admin.page.fill("input[name=consumer_key]", x.consumer_key)
    admin.page.fill("input[name=consumer_secret]", x.consumer_secret)
    admin.page.click("button:text('Continue to X')")
    admin.page.wait_for_url(live_server + "/connections")
    assert "Connected Brand account" in admin.flash()
    admin.nav("Users")
    admin.page.fill("input[name=email]", "marketer@example.com")
    admin.page.fill("input[name=password]", PASSWORD)
    admin.page.click("button:text('Add user')")
    assert "marketer@example.com" in admin.page.inner_text("table")

    # The marketer adds a site and gets its snippet.
    marketer = Browser(chromium, live_server, shots)
    marketer.log_in("marketer@example.com")
    assert "Connections" not in marketer.page.inner_text("nav")
    shop = Shop(live_server, write_key="")
    marketer.nav("Sites")
    marketer.page.fill("input[name=name]", "Shop")
    marketer.page.fill("textarea[name=allowed_origins]", shop.origin)
    marketer.page.click("button:text('Add site')")
    shop.write_key = marketer.page.inner_text("#write-key")
    marketer.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    marketer.page.click("button:text('Copy the snippet')")
    marketer.page.get_by_text("Copied").wait_for()
    snippet = marketer.page.evaluate("navigator.clipboard.readText()")
    assert shop.write_key in snippet and live_server in snippet
    marketer.shot("site")

    # A pixel, and a mapping for the wrong event name.
    marketer.page.click("a:text('Mappings and preview')")
    marketer.page.fill("input[name=p-pixel_id]", PIXEL)
    marketer.page.fill("input[name=p-name]", "Main pixel")
    marketer.page.click("button:text('Add pixel')")
    marketer.page.fill("input[name=m-event_name]", "Purchase")
    marketer.page.fill("input[name=m-x_event_id]", EVENT)
    marketer.page.click("button:text('Add mapping')")
    assert "Mapping added" in marketer.flash()

    # Test mode: a test event becomes a test delivery; nothing reaches X.
    marketer.nav("Sites")
    marketer.page.click("a:text('Shop')")
    marketer.page.check("input[name=test_mode]")
    marketer.page.click("button:text('Save')")
    assert "TEST MODE" in marketer.page.inner_text("h1")
    marketer.page.click("button:text('Send a test event')")
    assert "Test event" in marketer.flash()
    deliver()
    marketer.page.reload()
    debugger = marketer.page.locator("#events-live")
    debugger.locator(".badge.test").first.wait_for()
    assert "Purchase" in debugger.inner_text() and "forwarded" in debugger.inner_text()
    marketer.shot("test-event")
    marketer.nav("Delivery log")
    assert "test" in marketer.page.inner_text("table")
    assert x.accepted() == []
    marketer.nav("Dashboard")
    ticked = marketer.page.locator(".checklist li.done").all_inner_texts()
    assert len(ticked) == 3 and not any("snippet" in t for t in ticked)
    marketer.nav("Sites")
    marketer.page.click("a:text('Shop')")
    marketer.page.uncheck("input[name=test_mode]")
    marketer.page.click("button:text('Save')")
    assert "TEST MODE" not in marketer.page.inner_text("h1")

    # The shop sends a real order with the beacon: it is recorded, but unmapped.
    shop.pages["order.html"] = (
        'xtag.track("Order Completed", {order_id: "A-1", value: 42, currency: "eur",'
        ' email: "Jane.Doe+xtag@Example.com"});'
    )
    visitor = chromium.new_context()
    visitor.new_page().goto(shop.url("order.html?twclid=abc123"))
    try:
        recorded(deliver, orders=1)
        marketer.nav("Event debugger")
        debugger = marketer.page.locator("#events-live")
        debugger.get_by_text("unmapped").first.wait_for()  # it refreshes by itself
        assert "Order Completed" in debugger.inner_text()

        # The mappings page names the event seen without a mapping; the
        # marketer edits the mapping, watching the preview follow the edit.
        marketer.go("/sites")
        marketer.page.click("a:text('Shop')")
        marketer.page.click("a:text('Mappings and preview')")
        assert "Order Completed" in marketer.page.inner_text(".suggestions")
        marketer.page.click("a:text('Edit')")
        marketer.page.click("button:text('Use the latest real event of this name')")
        preview = marketer.page.locator("#preview-result")
        marketer.page.fill("input[name=m-event_name]", "Order Completed")
        marketer.page.click("button:text('Use the latest real event of this name')")
        preview.get_by_text('"value": "42.00"').wait_for()  # the order, not a stale preview
        assert "forwarded" in preview.inner_text()
        assert '"price_currency": "EUR"' in preview.inner_text()
        marketer.page.fill("input[name=m-description]", "Web order")
        preview.get_by_text('"description": "Web order"').wait_for()
        marketer.shot("mapping-preview")
        marketer.page.check("input[name=m-enabled]")
        marketer.page.click("button:text('Save mapping')")
        assert "Mapping saved" in marketer.flash()

        # The next order is forwarded and delivered.
        shop.pages["order2.html"] = shop.pages["order.html"].replace("A-1", "A-2")
        visitor.pages[0].goto(shop.url("order2.html"))
        recorded(deliver, orders=2)
        marketer.nav("Event debugger")
        debugger.get_by_text("forwarded").first.wait_for()
        marketer.shot("event-debugger")
        marketer.nav("Delivery log")
        assert "delivered" in marketer.page.inner_text("table")
        marketer.shot("delivery-log")
        marketer.page.click("table a")
        assert re.search(r"\b200\b", marketer.page.inner_text("main"))
        consuming.Consumer(app, name="walkthrough").heartbeat()  # deliver() is this test's worker
        marketer.nav("Dashboard")
        marketer.page.wait_for_selector("body.charts-on")
        assert marketer.page.locator(".checklist").count() == 0  # the first conversion is in
        quality = marketer.page.locator(f"[data-pixel='{PIXEL}']")
        assert "100.0%" in quality.inner_text()
        marketer.shot("dashboard")
    finally:
        visitor.close()
        shop.close()

    [accepted] = x.accepted(PIXEL)
    assert (accepted["conversion_id"], accepted["description"]) == ("A-2", "Web order")
    assert {"twclid": "abc123"} in accepted["identifiers"]  # carried from the landing page
    assert admin.errors == [] and marketer.errors == []
