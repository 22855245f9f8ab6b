"""The browser SDKs sites already run, unchanged but their host, and xtag.js, in real
Chromium from another origin, with no internet: analytics-next loaded from
npm with `cdnURL`, Segment's standard snippet with `analytics._cdn`, and
RudderStack's v3 SDK. A visitor lands with ?twclid=, goes to a second
page, logs in (identify with an email) and orders: X receives the order
once, with the click id of the landing page and the hashed email.

The snippets are read from the README: what it shows is what runs here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from tests.support.browser import Shop, needs_chromium, received
from tests.support.shop import EVENT, setup_shop
from xtag.core.identity import hash_email
from xtag.extensions import db
from xtag.models import Site
from xtag.services import refusals

EMAIL = "jane@example.com"
TWCLID = "23opevjt88psuo13lu8d020qkn"
LAND = "analytics.page();"
BUY = (
    f'analytics.identify("user-42", {{email: "{EMAIL}"}});\n'
    'analytics.track("Order Completed", {order_id: "A-1001", revenue: 59.9, currency: "EUR"});'
)

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = {
    "analytics-next": "analytics-next from npm",
    "segment-snippet": "Segment's standard snippet",
    "rudderstack": "RudderStack JavaScript SDK v3",
}


def snippet(sdk: str) -> str:
    """The README's snippet for this SDK, exactly as a site would paste it."""
    found = re.search(
        r"<!-- xtag: " + re.escape(SNIPPETS[sdk]) + r".*?-->\n(.*?)\n```", README.read_text(), re.S
    )
    assert found, f"the README no longer shows the {sdk} snippet"
    return found.group(1)


def page(sdk: str, shop: Shop, calls: str) -> str:
    head = (
        snippet(sdk)
        .replace("https://collect.example.com", shop.collector)
        .replace("WRITE_KEY", shop.write_key)
        .replace(LAND, calls)
    )
    icon = '<link rel="icon" href="data:,">'
    return f"<!doctype html><html><head>{icon}{head}</head><body></body></html>"


@pytest.fixture
def store(x_app, live_server, ctx, fake_x):
    site = setup_shop(fake_x)  # "Order Completed" -> X's pixel, any origin allowed
    shop = Shop(live_server, site.write_key)
    yield shop
    shop.close()


# xtag's own beacon, as the README installs it (its snippet sends the page view)
XTAG_BUY = (
    f'xtag.identify({{email: "{EMAIL}"}});\n'
    'xtag.track("Order Completed", {order_id: "A-1001", revenue: 59.9, currency: "EUR"});'
)


@needs_chromium
@pytest.mark.parametrize("sdk", [*sorted(SNIPPETS), "xtag.js"])
def test_an_order_reaches_x_once_with_the_landing_click_id_and_the_email(
    store, tab, work, deliver, fake_x, sdk
):
    if sdk == "xtag.js":
        store.pages["landing.html"], store.pages["checkout.html"] = "", XTAG_BUY
    else:
        store.raw["landing.html"] = page(sdk, store, LAND)
        store.raw["checkout.html"] = page(sdk, store, BUY)
    visitor = tab()
    visitor.page.goto(store.url(f"landing.html?utm_source=x&twclid={TWCLID}"))
    received(work, lambda rows: any(r.type == "page" for r in rows))
    visitor.page.goto(store.url("checkout.html"))
    rows = received(work, lambda rows: any(r.event_name == "Order Completed" for r in rows))
    deliver()
    orders = [c for c in fake_x.accepted() if c.get("conversion_id") == "A-1001"]
    assert len(orders) == 1, (fake_x.accepted(), visitor.errors, [r.message for r in rows])
    [order] = orders
    assert order["event_id"] == EVENT
    found = {k: v for part in order["identifiers"] for k, v in part.items()}
    assert found["twclid"] == TWCLID
    assert found["hashed_email"] == hash_email(EMAIL)
    assert (order["value"], order["price_currency"]) == ("59.90", "EUR")


@needs_chromium
@pytest.mark.parametrize("sdk", ["analytics-next", "rudderstack"])
def test_a_429_is_retried_by_the_sdk_and_lands(store, tab, work, deliver, fake_x, sdk):
    site = db.session.scalar(select(Site).where(Site.write_key == store.write_key))
    site.rate_limit = 1  # event per second, with a burst of 10: spent below
    db.session.commit()
    drained = requests.post(
        f"{store.collector}/v1/batch",
        json={"batch": [{"type": "track", "event": "Burst", "anonymousId": "b"}] * 10},
        auth=(store.write_key, ""),
        timeout=5,
    )
    assert drained.status_code == 200
    calls = "analytics.page();\n" + BUY.split("\n")[1]
    store.raw["landing.html"] = page(sdk, store, calls)
    visitor = tab()
    visitor.page.goto(store.url(f"landing.html?twclid={TWCLID}"))
    received(work, lambda rows: any(r.event_name == "Order Completed" for r in rows), timeout=40)
    deliver()
    [order] = [c for c in fake_x.accepted() if c.get("conversion_id") == "A-1001"]
    assert {k: v for part in order["identifiers"] for k, v in part.items()}["twclid"] == TWCLID
    assert 429 in [r["status"] for r in refusals.latest(site.id)["items"]]
