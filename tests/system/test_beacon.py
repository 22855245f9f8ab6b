"""The site beacon (static/xtag.js) in real Chromium.

The shop page is served from another origin than the collector: the page is
on http://localhost:<port>, the collector on http://127.0.0.1:<port>. They are
different sites, so the collector's own cookies never reach or help the page;
whatever twclid rides on later pages comes from the beacon's first-party cookie.
"""

from __future__ import annotations

import gzip
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import factories
from tests.support.browser import BEACON, Shop, needs_chromium, received
from xtag.models import ReceivedEvent

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
DAY = 24 * 3600


def test_beacon_is_at_most_2_kb_gzipped():
    assert len(gzip.compress(BEACON.read_bytes())) <= 2048


@pytest.fixture
def shop(live_server, ctx):
    site = Shop(live_server, write_key="")
    site.write_key = factories.site(allowed_origins=[site.origin]).write_key
    yield site
    site.close()


def named(rows: list[ReceivedEvent], event_name: str) -> list[ReceivedEvent]:
    return [r for r in rows if r.event_name == event_name]


@needs_chromium
def test_landing_twclid_rides_on_every_event_and_later_pages(shop, tab, work):
    shop.pages["page1.html"] = (
        'xtag.track("Order Completed", {value: 20, currency: "usd"});'
        "window.trackedBeforeLoad = !xtag.load;"
    )
    shop.pages["page2.html"] = ""
    t = tab()

    t.page.goto(shop.url("page1.html?twclid=abc123"))
    rows = received(work, lambda rows: named(rows, "page") and named(rows, "Order Completed"))

    assert t.page.evaluate("window.trackedBeforeLoad") is True
    assert sorted((r.type, r.event_name) for r in rows) == [
        ("page", "page"),
        ("track", "Order Completed"),
    ]
    (landing,) = named(rows, "page")
    (order,) = named(rows, "Order Completed")
    assert order.message["properties"] == {"value": 20, "currency": "usd"}
    assert landing.message["context"]["page"]["url"] == shop.url("page1.html?twclid=abc123")
    assert landing.message["context"]["page"]["title"] == "page1.html"
    assert order.message["context"]["library"]["name"] == "xtag.js"
    for row in rows:
        assert row.identifiers["twclid"] == "abc123"
        assert "HeadlessChrome" in row.identifiers["user_agent"]

    cookies = t.cookies()
    assert set(cookies) == {("localhost", "_xtag_aid"), ("localhost", "_xtag_twclid")}
    twclid, aid = cookies["localhost", "_xtag_twclid"], cookies["localhost", "_xtag_aid"]
    assert twclid["value"] == "abc123"
    assert (twclid["path"], twclid["sameSite"], twclid["secure"]) == ("/", "Lax", False)
    assert abs(twclid["expires"] - time.time() - 30 * DAY) < 3600
    assert abs(aid["expires"] - time.time() - 365 * DAY) < 3600
    assert {r.message["anonymousId"] for r in rows} == {aid["value"]}

    t.page.click("#next")
    rows = received(work, lambda rows: len(named(rows, "page")) == 2)

    later = named(rows, "page")[1]
    assert later.message["context"]["page"]["url"] == shop.url("page2.html")
    assert later.message["context"]["page"]["referrer"] == shop.url("page1.html?twclid=abc123")
    assert later.identifiers["twclid"] == "abc123"
    assert later.message["anonymousId"] == aid["value"]
    assert len(rows) == 3
    message_ids = [r.message_id for r in rows]
    assert len(set(message_ids)) == 3
    assert all(UUID.match(m) for m in message_ids), message_ids
    calls = t.collector_calls()
    pixel = ("script", f"/v1/pixel.js?writeKey={shop.write_key}")  # on a page's first track call
    assert [c for c in calls if c != pixel] == [("ping", "/v1/batch"), ("ping", "/v1/page")]
    assert calls.count(pixel) == 1
    assert t.errors == []


@needs_chromium
def test_auto_page_off_sends_no_page_view(shop, tab, work):
    shop.pages["quiet.html"] = 'xtag.autoPage = false; xtag.track("Signup");'
    t = tab()

    t.page.goto(shop.url("quiet.html"))
    received(work, lambda rows: named(rows, "Signup"))
    t.page.evaluate('xtag.track("Lead")')
    rows = received(work, lambda rows: named(rows, "Lead"))

    assert [(r.type, r.event_name) for r in rows] == [("track", "Signup"), ("track", "Lead")]
    assert t.errors == []


@needs_chromium
def test_identify_keeps_the_user_across_pages_until_reset(shop, tab, work):
    shop.pages["account.html"] = 'xtag.identify("user-42", {plan: "pro"});'
    shop.pages["page2.html"] = ""
    t = tab()

    t.page.goto(shop.url("account.html"))
    rows = received(work, lambda rows: len(rows) == 2)
    t.page.click("#next")
    rows = received(work, lambda rows: len(rows) == 3)

    identify = next(r for r in rows if r.type == "identify")
    assert identify.outcome == "identified"
    assert identify.message["userId"] == "user-42"
    later = rows[-1]
    assert later.message["context"]["page"]["url"] == shop.url("page2.html")
    assert later.message["userId"] == "user-42"
    anonymous_id = later.message["anonymousId"]

    t.page.evaluate('xtag.reset(); xtag.track("After Logout")')
    rows = received(work, lambda rows: named(rows, "After Logout"))

    (after,) = named(rows, "After Logout")
    assert after.message["userId"] is None
    assert after.message["anonymousId"] not in (None, anonymous_id)
    assert t.errors == []


@needs_chromium
def test_without_send_beacon_or_random_uuid_events_go_by_fetch(shop, tab, work):
    shop.pages["page1.html"] = 'xtag.track("Order Completed", {value: 20});'
    t = tab(
        "Navigator.prototype.sendBeacon = function () { return false; };"
        "delete Crypto.prototype.randomUUID;"
    )

    t.page.goto(shop.url("page1.html?twclid=abc123"))
    rows = received(work, lambda rows: len(rows) == 2)
    t.page.evaluate('xtag.track("Lead")')
    rows = received(work, lambda rows: named(rows, "Lead"))

    assert sorted(r.event_name for r in rows) == ["Lead", "Order Completed", "page"]
    assert all(r.identifiers["twclid"] == "abc123" for r in rows)
    message_ids = [r.message_id for r in rows]
    assert len(set(message_ids)) == 3
    assert all(UUID.match(m) for m in message_ids), message_ids
    calls = t.collector_calls()
    pixel = ("script", f"/v1/pixel.js?writeKey={shop.write_key}")
    assert [c for c in calls if c != pixel] == [("fetch", "/v1/batch"), ("fetch", "/v1/track")]
    assert t.errors == []


@needs_chromium
def test_a_wrong_visitor_clock_does_not_move_the_event_time(shop, tab, work):
    shop.pages["page1.html"] = ""
    t = tab(
        "(function () { var Real = Date, skew = 3 * 864e5;"
        "  function Skewed() { return arguments.length ? new (Function.prototype.bind.apply("
        "    Real, [null].concat([].slice.call(arguments)))) : new Real(Real.now() + skew); }"
        "  Skewed.prototype = Real.prototype; Skewed.UTC = Real.UTC; Skewed.parse = Real.parse;"
        "  Skewed.now = function () { return Real.now() + skew; }; window.Date = Skewed; })();"
    )

    t.page.goto(shop.url("page1.html"))
    (row,) = received(work, lambda rows: len(rows) == 1)

    assert t.page.evaluate("new Date().getTime() - performance.timeOrigin") > DAY * 1000
    recorded = datetime.fromisoformat(row.message["timestamp"].replace("Z", "+00:00"))
    assert abs(recorded - datetime.now(UTC)) < timedelta(minutes=5)
    assert t.errors == []
