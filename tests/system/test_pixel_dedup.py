"""Browser pixel + server, counted once (issue 14): a site with its own X pixel
(x_pixel_id) has xtag.js fire that pixel for the events xtag forwards, with
the very conversion_id the server sends X, so X deduplicates the pair.

Real Chromium, no network: X's uwt.js is answered by Playwright from a fake
that records what X's pixel would receive; elsewhere the page defines its own
twq, as a site running X's base code does."""

from __future__ import annotations

import pytest

from tests.support.browser import Shop, needs_chromium, received
from tests.support.shop import EVENT, PIXEL, setup_shop
from xtag.extensions import db
from xtag.models import Site

TWCLID = "23opevjt88psuo13lu8d020qkn"
PIXEL_EVENT = f"tw-{PIXEL}-{EVENT}"
UWT = "https://static.ads-twitter.com/uwt.js"
# what X's uwt.js does with the base code's queue, recording instead of sending
FAKE_UWT = (
    "(function () { var t = window.twq; window.uwtCalls = [];"
    " t.exe = function () { uwtCalls.push([].slice.call(arguments)); };"
    " t.queue.forEach(function (a) { t.exe.apply(t, a); }); t.queue = []; })();"
)
# a page that runs X's pixel itself: its twq, recording each call
TWQ = "window.twqCalls = []; window.twq = function () { twqCalls.push([].slice.call(arguments)); };"
HOOKED = "xtag.pixel && xtag.pixel.hook"


@pytest.fixture
def site(x_app, live_server, ctx, fake_x):
    row = setup_shop(fake_x)  # "Order Completed" -> pixel o8z6j, event o87ne on the fake X
    row.x_pixel_id = PIXEL
    db.session.commit()
    return row


@pytest.fixture
def shop(site, live_server):
    shop = Shop(live_server, site.write_key)
    yield shop
    shop.close()


@pytest.fixture
def visitor(tab):
    """A browser tab that answers uwt.js from the fake; `.uwt` counts its loads."""

    def open_tab(init_script: str | None = None, headers: dict | None = None):
        t = tab(init_script)
        t.uwt = []
        if headers:
            t.context.set_extra_http_headers(headers)

        def answer(route):
            t.uwt.append(route.request.url)
            route.fulfill(status=200, content_type="application/javascript", body=FAKE_UWT)

        t.context.route(UWT, answer)
        return t

    return open_tab


def change(site: Site, **values) -> None:
    for name, value in values.items():
        setattr(site, name, value)
    db.session.commit()


def conversion_ids(fake_x) -> list[str]:
    return [c["conversion_id"] for c in fake_x.accepted() if c["event_id"] == EVENT]


def twq_calls(t) -> list[list]:
    return t.page.evaluate("window.twqCalls")


def loaded_pixel_script(t, url: str) -> bytes:
    """Open the page; the body of the pixel script xtag.js fetched for it."""
    with t.page.expect_response(lambda r: "/v1/pixel.js" in r.url) as response:
        t.page.goto(url)
    return response.value.body()


@needs_chromium
def test_the_pixel_and_x_get_the_same_order_id(shop, visitor, work, deliver, fake_x):
    shop.pages["checkout.html"] = (
        TWQ + 'xtag.track("Order Completed", {order_id: "A-1", revenue: 59.9, currency: "EUR"});'
    )
    t = visitor()

    t.page.goto(shop.url(f"checkout.html?twclid={TWCLID}"))
    t.page.wait_for_function("twqCalls.length == 1")
    received(work, lambda rows: any(r.event_name == "Order Completed" for r in rows))
    deliver()

    assert twq_calls(t) == [["event", PIXEL_EVENT, {"conversion_id": "A-1"}]]
    assert conversion_ids(fake_x) == ["A-1"]
    assert t.uwt == []  # the page's own twq: X's script is not loaded again
    assert t.errors == []


@needs_chromium
def test_without_an_order_id_both_use_the_message_id(shop, visitor, work, deliver, fake_x):
    shop.pages["signup.html"] = 'xtag.track("Order Completed", {revenue: 20});'
    t = visitor()

    t.page.goto(shop.url(f"signup.html?twclid={TWCLID}"))
    t.page.wait_for_function("window.uwtCalls && uwtCalls.length == 2")
    rows = received(work, lambda rows: any(r.event_name == "Order Completed" for r in rows))
    deliver()

    (order,) = [r for r in rows if r.event_name == "Order Completed"]
    assert t.page.evaluate("uwtCalls") == [
        ["config", PIXEL],
        ["event", PIXEL_EVENT, {"conversion_id": order.message_id}],
    ]
    assert conversion_ids(fake_x) == [order.message_id]
    assert t.uwt == [UWT]
    assert t.errors == []


@needs_chromium
def test_awkward_ids_come_out_as_the_server_writes_them(shop, visitor, work, deliver, fake_x):
    """Trimmed, cut at 500 characters, numbers as Python writes them, and a
    false-ish order id (0) or a true (an object) one treated as the server does."""
    cases = [
        '{order_id: "  B-2\\t"}',
        "{order_id: 1001}",
        "{order_id: 12.5}",
        '{order_id: "ü".repeat(600)}',
        '{conversion_id: "C-3", order_id: "ignored"}',
        '{conversion_id: "", order_id: "D-4"}',
        '{order_id: "\\u001cE-5\\ufeff"}',  # Python strips the first, JavaScript the last
        "{order_id: 0}",
        "{order_id: []}",
    ]
    calls = "".join(f'xtag.track("Order Completed", {props});' for props in cases)
    shop.pages["orders.html"] = TWQ + calls
    t = visitor()

    t.page.goto(shop.url(f"orders.html?twclid={TWCLID}"))
    t.page.wait_for_function(f"twqCalls.length == {len(cases)}")
    received(work, lambda rows: len(rows) == 1 + len(cases))
    deliver()

    from_pixel = [call[2]["conversion_id"] for call in twq_calls(t)]
    assert from_pixel[:7] == ["B-2", "1001", "12.5", "ü" * 500, "C-3", "D-4", "E-5\ufeff"]
    assert sorted(from_pixel) == sorted(conversion_ids(fake_x))
    assert t.errors == []


@needs_chromium
def test_no_pixel_option_no_pixel_call(site, shop, visitor, work, deliver, fake_x):
    change(site, x_pixel_id=None)
    shop.pages["checkout.html"] = TWQ + 'xtag.track("Order Completed", {order_id: "A-1"});'
    t = visitor()

    body = loaded_pixel_script(t, shop.url(f"checkout.html?twclid={TWCLID}"))
    received(work, lambda rows: any(r.event_name == "Order Completed" for r in rows))
    deliver()

    assert body == b""
    assert twq_calls(t) == []
    assert t.uwt == []
    assert conversion_ids(fake_x) == ["A-1"]  # the server alone, as before
    assert t.errors == []


@needs_chromium
def test_a_page_with_no_track_call_loads_no_pixel_script(shop, visitor, work):
    shop.pages["landing.html"] = ""
    t = visitor()

    t.page.goto(shop.url(f"landing.html?twclid={TWCLID}"))
    received(work, lambda rows: len(rows) == 1)

    assert [path for _, path in t.collector_calls()] == ["/v1/page"]
    assert t.uwt == []


@needs_chromium
def test_test_mode_no_pixel_call(site, shop, visitor, work):
    change(site, test_mode=True)
    shop.pages["checkout.html"] = 'xtag.track("Order Completed", {order_id: "A-1"});'
    t = visitor()

    body = loaded_pixel_script(t, shop.url(f"checkout.html?twclid={TWCLID}"))
    received(work, lambda rows: any(r.event_name == "Order Completed" for r in rows))

    assert body == b""
    assert t.page.evaluate("typeof window.twq") == "undefined"
    assert t.uwt == []


@needs_chromium
def test_global_privacy_control_no_pixel_call_and_the_server_drops(shop, visitor, work):
    shop.pages["checkout.html"] = TWQ + 'xtag.track("Order Completed", {order_id: "A-1"});'
    t = visitor(
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});",
        headers={"Sec-GPC": "1"},
    )

    t.page.goto(shop.url(f"checkout.html?twclid={TWCLID}"))
    t.page.wait_for_function(HOOKED)
    rows = received(work, lambda rows: any(r.event_name == "Order Completed" for r in rows))

    (order,) = [r for r in rows if r.event_name == "Order Completed"]
    assert (order.outcome, order.reason) == ("dropped", "consent")
    assert twq_calls(t) == []
    assert t.uwt == []


@needs_chromium
def test_an_unmapped_event_no_pixel_call(shop, visitor, work):
    shop.pages["newsletter.html"] = TWQ + 'xtag.track("Newsletter Signup", {order_id: "N-1"});'
    t = visitor()

    t.page.goto(shop.url(f"newsletter.html?twclid={TWCLID}"))
    t.page.wait_for_function(HOOKED)
    received(work, lambda rows: any(r.event_name == "Newsletter Signup" for r in rows))
    assert twq_calls(t) == []

    t.page.evaluate('xtag.track("Order Completed", {order_id: "A-1"})')
    assert twq_calls(t) == [["event", PIXEL_EVENT, {"conversion_id": "A-1"}]]


@needs_chromium
def test_consent_the_site_requires_is_required_of_the_pixel_too(
    site, shop, visitor, work, deliver, fake_x
):
    change(site, require_consent=True)
    shop.pages["checkout.html"] = TWQ + 'xtag.track("Order Completed", {order_id: "A-1"});'
    t = visitor()

    t.page.goto(shop.url(f"checkout.html?twclid={TWCLID}"))
    t.page.wait_for_function(HOOKED)
    t.page.evaluate(
        "xtag.consent = {categoryPreferences: {advertising: true}};"
        'xtag.track("Order Completed", {order_id: "A-2"});'
        'xtag.consent = {ad_storage: "denied"};'
        'xtag.track("Order Completed", {order_id: "A-3"});'
    )
    rows = received(work, lambda rows: len(rows) == 4)
    deliver()

    assert twq_calls(t) == [["event", PIXEL_EVENT, {"conversion_id": "A-2"}]]
    assert conversion_ids(fake_x) == ["A-2"]
    # the page view and A-1 (no grant), A-3 (denied); A-2 went to X (above)
    assert sorted((r.event_name, r.outcome, r.reason or "") for r in rows) == [
        ("Order Completed", "dropped", "consent"),
        ("Order Completed", "dropped", "consent"),
        ("Order Completed", "forwarded", ""),
        ("page", "dropped", "consent"),
    ]
