"""What real SDKs expect of a Segment- or RudderStack-compatible collector
(issue 12): the settings they fetch, the headers they send, the write key
where they put it, answers they can parse, batches that are not all or
nothing, and Segment's own semantics (integrations, sentAt, library)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import factories
from tests.support.sending import basic, queued, track
from tests.support.shop import events
from tests.support.web import login, token_for
from xtag.collector.sdks import VENDORED
from xtag.core.identity import hash_email, sha256_hex
from xtag.core.times import parse

SHOP = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36"


@pytest.fixture
def site(ctx):
    return factories.site(allowed_origins=[SHOP])


# --- what SDKs fetch before they send ---------------------------------------------


def test_segment_settings_point_analytics_next_at_this_collector(client, site):
    r = client.get(f"/v1/projects/{site.write_key}/settings", base_url="https://collect.example")
    assert r.status_code == 200
    segment = r.json["integrations"]["Segment.io"]
    assert (segment["apiKey"], segment["apiHost"], segment["protocol"]) == (
        site.write_key,
        "collect.example/v1",
        "https",
    )
    assert r.json["metrics"]["sampleRate"] == 0  # nothing goes to Segment's own API
    r = client.get("/v1/projects/no-such-key/settings")
    assert (r.status_code, r.json["code"]) == (401, "unauthorized")


def test_rudderstack_source_config_has_no_device_mode_destinations(client, site):
    r = client.get(f"/sourceConfig/?p=npm&v=3.7.0&writeKey={site.write_key}")
    assert r.status_code == 200
    source = r.json["source"]
    assert (source["enabled"], source["destinations"], source["writeKey"]) == (
        True,
        [],
        site.write_key,
    )
    r = client.get("/sourceConfig/", headers=basic(site.write_key))
    assert r.status_code == 200
    assert client.get("/sourceConfig/?writeKey=nope").status_code == 401


def test_analytics_next_standalone_and_its_chunks_are_served(client, site):
    with client.get(f"/analytics.js/v1/{site.write_key}/analytics.min.js") as r:
        assert r.status_code == 200 and r.content_type.startswith("text/javascript")
        assert b"analytics" in r.data and len(r.data) > 50_000
    chunks = sorted(p.name for p in VENDORED.glob("*.bundle.*.js"))
    assert chunks
    with client.get(f"/analytics-next/bundles/{chunks[0]}") as r:
        assert r.status_code == 200
    assert client.get("/analytics.js/v1/no-such-key/analytics.min.js").status_code == 401
    for path in ("/analytics-next/bundles/standalone.js", "/analytics-next/bundles/..%2fx.js"):
        r = client.get(path)
        assert (r.status_code, r.json["code"]) == (404, "not_found")


def test_unknown_routes_and_methods_answer_like_every_refusal(client):
    r = client.get("/v1/nope")
    assert (r.status_code, r.json["code"]) == (404, "not_found") and r.json["message"]
    r = client.get("/v1/track")
    assert (r.status_code, r.json["code"]) == (405, "invalid") and r.json["message"]


# --- CORS as browser SDKs need it ---------------------------------------------------


def test_preflight_allows_the_headers_sdks_send(client):
    asked = "authorization, content-type, anonymousid, sentat, x-retry-count, rsa-request-id"
    for path in ("/v1/t", "/v1/batch", "/beacon/v1/batch", "/sourceConfig/"):
        r = client.options(
            path,
            headers={
                "Origin": SHOP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": asked,
            },
        )
        assert r.status_code == 204, path
        assert r.headers["Access-Control-Allow-Origin"] == SHOP
        allowed = r.headers["Access-Control-Allow-Headers"].lower()
        assert all(h in allowed for h in ("anonymousid", "sentat", "x-retry-count", "rsa-"))


def test_credentials_only_for_an_allowed_origin_and_retry_after_exposed(client, site):
    key = basic(site.write_key)
    r = client.post("/v1/track", json=track(), headers={**key, "Origin": SHOP})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]
    r = client.post("/v1/track", json=track(), headers={**basic("nope"), "Origin": SHOP})
    assert r.status_code == 401 and "Access-Control-Allow-Origin" not in r.headers
    r = client.post("/v1/track", json=track(), headers={**key, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers
    r = client.post("/v1/track", json={"anonymousId": "a"}, headers={**key, "Origin": SHOP})
    assert r.status_code == 400 and r.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Access-Control-Allow-Credentials" not in r.headers  # never on an error
    r = client.get(f"/sourceConfig/?writeKey={site.write_key}", headers={"Origin": SHOP})
    assert r.headers["Access-Control-Allow-Origin"] == SHOP
    r = client.get(f"/sourceConfig/?writeKey={site.write_key}", headers={"Origin": "https://x.io"})
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers


# --- the write key where RudderStack puts it, and its beacon transport ---------------


def test_write_key_in_the_query_and_the_beacon_route(client, site, work):
    r = client.post(f"/v1/track?writeKey={site.write_key}", json=track())
    assert r.status_code == 200, r.json
    beacon = json.dumps({"batch": [{**track(), "type": "track"}], "sentAt": _now()})
    r = client.post(
        f"/beacon/v1/batch?writeKey={site.write_key}",
        data=beacon,
        content_type="text/plain;charset=UTF-8",
        headers={"Origin": SHOP},
    )
    assert r.status_code == 200, r.json
    work()
    assert [e.event_name for e in events()] == ["Order Completed", "Order Completed"]


# --- answers SDKs can parse -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{nope", {}, 400, "invalid"),
        (b"{}", {"Content-Encoding": "br"}, 415, "unsupported_encoding"),
        (json.dumps(track(properties={"x": "y" * 40_000})).encode(), {}, 413, "too_large"),
    ],
)
def test_every_refusal_carries_a_code_and_a_message(client, site, body, headers, status, code):
    r = client.post(
        "/v1/track",
        data=body,
        content_type="application/json",
        headers={**basic(site.write_key), **headers},
    )
    assert r.status_code == status
    assert r.json["code"] == code and r.json["message"] == r.json["error"] != ""


def test_a_batch_with_bad_messages_delivers_the_good_ones(client, site, work):
    batch = {
        "batch": [
            {**track(messageId="good-1"), "type": "track"},
            {"type": "track", "anonymousId": "a"},  # no event name
            {
                **track(messageId="good-2"),
                "type": "track",
                "context": {"ip": "203.0.113.9, 10.0.0.1"},
            },
            {**track(messageId="good-3"), "type": "track"},
        ]
    }
    r = client.post("/v1/batch", json=batch, headers=basic(site.write_key))
    assert r.status_code == 200
    assert r.json["success"] is True
    assert [(x["index"], x["error"]) for x in r.json["refused"]] == [
        (1, "batch[1].event is required for a track message"),
        (2, "batch[2].context.ip is not an IP address"),
    ]
    work()
    assert sorted(e.message_id for e in events()) == ["good-1", "good-3"]


# --- Segment's semantics ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("integrations", "forwarded"),
    [
        ({"All": False}, False),
        ({"X": False}, False),
        ({"Twitter Ads": False}, False),
        ({"xtag": False}, False),
        ({"x ads": False}, False),
        ({"All": False, "X": True}, True),
        ({"All": False, "Twitter Ads": {"some": "option"}}, True),
        ({"All": True, "Google Analytics": False}, True),
        ({}, True),
    ],
)
def test_integrations_keep_an_event_from_x(client, site, work, integrations, forwarded):
    r = client.post(
        "/v1/track", json=track(integrations=integrations), headers=basic(site.write_key)
    )
    assert r.status_code == 200
    work()
    [event] = events()
    assert (event.outcome, event.reason) == (
        ("unmapped", None) if forwarded else ("dropped", "integrations")
    )


def test_a_batch_level_sent_at_corrects_messages_without_their_own(client, site, work):
    wrong_clock = datetime.now(UTC) + timedelta(hours=3)  # the visitor's clock is 3 h ahead
    happened = wrong_clock - timedelta(seconds=20)
    message = {**track(), "type": "track", "originalTimestamp": happened.isoformat()}
    body = {"batch": [message], "sentAt": wrong_clock.isoformat()}
    assert client.post("/v1/batch", json=body, headers=basic(site.write_key)).status_code == 200
    work()
    [event] = events()
    when = parse(event.message["timestamp"])
    assert abs((event.received_at - when).total_seconds() - 20) < 2


@pytest.mark.parametrize(
    "library",
    ["analytics-python", "analytics-node", "rudder-sdk-python", "rudder-sdk-node", None],
)
def test_a_server_sdk_is_never_taken_for_the_visitor(client, site, work, library):
    context = {"library": {"name": library, "version": "2.4.0"}} if library else {}
    headers = {**basic(site.write_key), "User-Agent": f"{library or 'curl'}/2.4.0"}
    client.post("/v1/track", json=track(context=context), headers=headers)
    given = {**context, "ip": "203.0.113.9", "userAgent": BROWSER}
    client.post("/v1/track", json=track(context=given), headers=headers)
    work()
    first, second = events()
    assert "ip_address" not in first.identifiers and "user_agent" not in first.identifiers
    assert (second.identifiers["ip_address"], second.identifiers["user_agent"]) == (
        "203.0.113.9",
        BROWSER,
    )


def test_a_browser_or_mobile_sdk_request_stands_for_the_visitor(client, site, work):
    key = basic(site.write_key)
    client.post("/v1/track", json=track(), headers={**key, "Origin": SHOP, "User-Agent": BROWSER})
    mobile = {"library": {"name": "analytics-ios", "version": "4.1"}}
    client.post("/v1/track", json=track(context=mobile), headers={**key, "User-Agent": "Shop/1"})
    work()
    web, app = events()
    assert (web.identifiers["ip_address"], web.identifiers["user_agent"]) == ("127.0.0.1", BROWSER)
    assert (app.identifiers["ip_address"], app.identifiers["user_agent"]) == ("127.0.0.1", "Shop/1")


def test_x_own_twclid_cookie_is_read_bare_or_as_json(client, site, work):
    key = basic(site.write_key)
    client.set_cookie("_twclid", "%7B%22twclid%22%3A%22from-x%22%2C%22timestamp%22%3A1%7D")
    client.post("/v1/track", json=track(), headers=key)
    client.set_cookie("_xtag_twclid", "from-xtag")
    client.post("/v1/track", json=track(), headers=key)
    work()
    assert [e.identifiers["twclid"] for e in events()] == ["from-x", "from-xtag"]


def test_group_traits_screen_names_and_device_ids(client, site, work):
    key = basic(site.write_key)
    group = {"type": "group", "groupId": "acme", "anonymousId": "a-1"}
    group["traits"] = {"email": "billing@acme.example", "name": "Acme"}
    screen = {"type": "screen", "name": "Checkout", "anonymousId": "a-1"}
    screen["context"] = {"device": {"advertisingId": "6D92078A-8246-4BA4-AE5B-76104861E7DC"}}
    r = client.post("/v1/batch", json={"batch": [group, screen]}, headers=key)
    assert r.status_code == 200, r.json
    work()
    recorded_group, recorded_screen = events()
    assert "hashed_email" not in recorded_group.identifiers
    assert recorded_group.identifiers.get("hashed_email") != hash_email("billing@acme.example")
    assert (recorded_screen.event_name, recorded_screen.message["name"]) == ("screen", "Checkout")
    device = recorded_screen.message["context"]["device"]
    assert device["advertisingId"] == sha256_hex("6D92078A-8246-4BA4-AE5B-76104861E7DC")
    assert queued() == 0


def _now() -> str:
    return datetime.fromtimestamp(time.time(), UTC).isoformat()


# --- debugging a set-up -------------------------------------------------------------------


def test_refused_requests_are_kept_per_site_without_their_body(client, site, work):
    key = basic(site.write_key)
    secret_email = "nobody-must-see@example.com"
    client.post(
        "/v1/track", json={"anonymousId": "a", "traits": {"email": secret_email}}, headers=key
    )
    client.post("/v1/track", json=track(), headers={**key, "Origin": "https://evil.example"})
    batch = {"batch": [{**track(), "type": "track"}, {"type": "track", "anonymousId": "a"}]}
    assert client.post("/v1/batch", json=batch, headers=key).status_code == 200
    client.post("/v1/track", json=track(), headers=basic("no-such-key"))
    admin = token_for("admin")
    r = client.get(f"/api/v1/sites/{site.id}/refused", headers=admin)
    assert r.status_code == 200
    assert r.json["count"] == 3
    assert [(x["status"], x["reason"]) for x in r.json["items"]] == [
        (400, "batch[1].event is required for a track message"),
        (403, "origin https://evil.example is not allowed for this site"),
        (400, "event is required for a track message"),
    ]
    assert secret_email not in r.get_data(as_text=True)
    assert client.get("/api/v1/sites/999/refused", headers=admin).status_code == 404
    login(client, "marketer")
    page = client.get(f"/sites/{site.id}").get_data(as_text=True)
    assert "origin https://evil.example is not allowed" in page
    assert "1</span> requests refused before any site was known" in client.get("/").get_data(
        as_text=True
    )


def test_the_debugger_shows_what_an_sdk_sent_and_where_identifiers_came_from(client, site, work):
    key = basic(site.write_key)
    library = {"name": "analytics.js", "version": "next-1.84.3"}
    landing = {
        "anonymousId": "a-5",
        "name": "Home",
        "context": {"library": library, "page": {"url": f"{SHOP}/?twclid=tw-5"}},
    }
    client.post("/v1/page", json=landing, headers={**key, "Origin": SHOP, "User-Agent": BROWSER})
    work()
    bought = track(anonymousId="a-5", userId="u-5", traits={"email": "five@example.com"})
    bought["timestamp"] = "2026-11-30T10:00:00Z"
    fresh = client.application.test_client()  # no cookie: the click id comes from memory
    fresh.post("/v1/track", json=bought, headers=key)
    work()
    r = client.get("/api/v1/events", headers=token_for("admin"))
    order, page = r.json["items"]
    assert (page["type"], page["name"], page["page_url"]) == (
        "page",
        "Home",
        f"{SHOP}/?twclid=tw-5",
    )
    assert page["library"] == library
    assert page["sources"] == {
        "twclid": "message",
        "ip_address": "request",
        "user_agent": "request",
    }
    assert (order["anonymous_id"], order["user_id"]) == ("a-5", "u-5")
    assert order["event_time"] == "2026-11-30T10:00:00.000Z"
    assert order["properties"] == {"revenue": 20}
    assert order["sources"] == {"hashed_email": "message", "twclid": "memory"}
    assert order["identifiers"]["twclid"] == "tw-5"
    login(client, "marketer")
    debugger = client.get(f"/events?site_id={site.id}").get_data(as_text=True)
    assert all(text in debugger for text in ("u-5", "a-5", "memory", "analytics.js", "Home"))


def test_a_batch_of_one_oversized_message_is_a_413(client, site):
    big = {**track(properties={"blob": "x" * (33 * 1024)}), "type": "track"}
    r = client.post("/v1/batch", json={"batch": [big]}, headers=basic(site.write_key))
    assert (r.status_code, r.json["code"]) == (413, "too_large")
    assert r.json["message"].startswith("batch[0] is")
