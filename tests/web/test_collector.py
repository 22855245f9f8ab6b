"""The collector contract of shared/spec/interfaces.md, over HTTP, against a
real Redis and database; a worker run records what became of each event."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.support import factories, pii
from tests.support.sending import basic, queued, track
from tests.support.shop import events
from xtag.core.identity import hash_email, hash_phone
from xtag.pipeline import inbox, queues
from xtag.pipeline.dedup import DEDUP_SECONDS, dedup_key


@pytest.fixture
def site(ctx):
    return factories.site(default_phone_region="US")


# --- 200 and what is queued -------------------------------------------------


def test_track_with_basic_auth_is_accepted_and_recorded(client, site, work):
    r = client.post("/v1/track", json=track(), headers=basic(site.write_key))
    assert r.status_code == 200
    assert r.json == {"success": True}
    assert queued() == 1
    work()
    [event] = events()
    assert (event.site_id, event.type, event.event_name) == (site.id, "track", "Order Completed")
    assert event.outcome == "unmapped"


def test_write_key_in_body_and_text_plain_body(client, site, work):
    body = json.dumps(track(writeKey=site.write_key))
    r = client.post("/v1/track", data=body, content_type="text/plain;charset=UTF-8")
    assert r.status_code == 200
    work()
    assert [e.event_name for e in events()] == ["Order Completed"]


def test_gzip_body(client, site, work):
    body = gzip.compress(json.dumps(track(writeKey=site.write_key)).encode())
    r = client.post(
        "/v1/track",
        data=body,
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.json
    work()
    assert len(events()) == 1


def test_page_identify_and_batch_routes(client, site, work):
    key = basic(site.write_key)
    assert (
        client.post("/v1/page", json={"anonymousId": "a", "name": "Home"}, headers=key).status_code
        == 200
    )
    assert (
        client.post("/v1/identify", json={"userId": "u1", "traits": {}}, headers=key).status_code
        == 200
    )
    batch = {
        "batch": [
            {"type": "track", "event": "Signup", "anonymousId": "a"},
            {"type": "page", "anonymousId": "a"},
            {"type": "identify", "userId": "u2"},
        ]
    }
    assert client.post("/v1/batch", json=batch, headers=key).status_code == 200
    work()
    got = [(e.type, e.event_name, e.outcome) for e in events()]
    assert got == [
        ("page", "page", "unmapped"),
        ("identify", None, "identified"),
        ("track", "Signup", "unmapped"),
        ("page", "page", "unmapped"),
        ("identify", None, "identified"),
    ]


def test_email_and_phone_are_hashed_before_queueing(client, site, app, work):
    message = track(
        userId="u-9",
        properties={"revenue": 20, "email": pii.RAW_EMAIL},
        context={"traits": {"phone": pii.RAW_PHONE_LOCAL}},
    )
    assert client.post("/v1/track", json=message, headers=basic(site.write_key)).status_code == 200
    raw_entry = repr(queues.redis_client().xrange(inbox.STREAM))
    assert "jane.doe" not in raw_entry.lower()
    assert "4155552671" not in raw_entry and "555-2671" not in raw_entry
    work()
    [event] = events()
    assert event.identifiers["hashed_email"] == hash_email(pii.RAW_EMAIL)
    assert event.identifiers["hashed_phone_number"] == hash_phone(pii.RAW_PHONE_E164)
    assert "email" not in event.message["properties"]


def test_unparseable_phone_is_dropped_and_event_still_accepted(client, ctx, work):
    site = factories.site()  # no default region: a local number cannot be placed
    message = track(traits={}, context={"traits": {"phone": pii.RAW_PHONE_LOCAL}})
    assert client.post("/v1/track", json=message, headers=basic(site.write_key)).status_code == 200
    work()
    assert "hashed_phone_number" not in events()[0].identifiers


def test_timestamp_is_kept_and_clock_skew_corrected(client, site, work):
    key = basic(site.write_key)
    client.post("/v1/track", json=track(timestamp="2026-11-20T10:00:00+01:00"), headers=key)
    client.post(
        "/v1/track",
        json=track(originalTimestamp="2026-11-20T10:00:00.000Z", sentAt="2026-11-20T10:00:05.000Z"),
        headers=key,
    )
    work()
    first, second = events()
    assert first.message["timestamp"] == "2026-11-20T09:00:00.000Z"
    # originalTimestamp was 5 s before sentAt, so the event happened 5 s before receipt
    skewed = second.received_at.timestamp() - 5
    from xtag.core.times import parse

    assert abs(parse(second.message["timestamp"]).timestamp() - skewed) < 0.01


# --- twclid, IP, user agent --------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        track(context={"twclid": "tw-ctx"}),
        track(properties={"twclid": "tw-ctx"}),
        track(context={"page": {"url": "https://shop.example/landing?utm=x&twclid=tw-ctx"}}),
    ],
    ids=["context.twclid", "properties.twclid", "page-url"],
)
def test_twclid_from_each_message_source_sets_first_party_cookie(client, site, work, message):
    r = client.post("/v1/track", json=message, headers=basic(site.write_key))
    assert r.status_code == 200
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("_xtag_twclid=tw-ctx;")
    assert "Max-Age=2592000" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    work()
    assert events()[0].identifiers["twclid"] == "tw-ctx"


def test_twclid_cookie_is_used_and_secure_over_https(client, site, work):
    client.set_cookie("_xtag_twclid", "from-cookie")
    r = client.post("/v1/track", json=track(), headers=basic(site.write_key))
    assert "Set-Cookie" not in r.headers  # nothing new to remember
    r = client.post(
        "/v1/track",
        json=track(context={"twclid": "newer"}),
        headers=basic(site.write_key),
        base_url="https://collect.example",
    )
    assert "Secure" in r.headers["Set-Cookie"]
    work()
    assert [e.identifiers["twclid"] for e in events()] == ["from-cookie", "newer"]


BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36"


def test_ip_and_user_agent_from_request_unless_given_in_context(client, site, work):
    key = basic(site.write_key)
    client.post("/v1/track", json=track(), headers={**key, "User-Agent": BROWSER})
    client.post(
        "/v1/track",
        json=track(context={"ip": "203.0.113.9", "userAgent": "SDK/2"}),
        headers={**key, "User-Agent": "Server/1.0"},
    )
    work()
    first, second = events()
    assert (first.identifiers["ip_address"], first.identifiers["user_agent"]) == (
        "127.0.0.1",
        BROWSER,
    )
    assert (second.identifiers["ip_address"], second.identifiers["user_agent"]) == (
        "203.0.113.9",
        "SDK/2",
    )


@pytest.mark.parametrize(("hops", "expected"), [(0, "127.0.0.1"), (1, "198.51.100.7")])
def test_client_ip_honours_trusted_proxies(make_app, hops, expected):
    app = make_app(XTAG_TRUSTED_PROXIES=str(hops))
    with app.app_context():
        site = factories.site(name=f"proxied-{hops}")
        r = app.test_client().post(
            "/v1/track",
            json=track(),
            headers={
                **basic(site.write_key),
                "X-Forwarded-For": "10.9.9.9, 198.51.100.7",
                "Origin": "https://shop.example",
            },
        )
        assert r.status_code == 200
        entry = inbox.peek(queues.redis_client(app))[-1]
        assert entry.events[0]["identifiers"]["ip_address"] == expected


# --- consent, dedup, identify --------------------------------------------------


def test_global_privacy_control_drops_for_consent(client, site, work):
    r = client.post("/v1/track", json=track(), headers={**basic(site.write_key), "Sec-GPC": "1"})
    assert r.status_code == 200
    work()
    assert [(e.outcome, e.reason) for e in events()] == [("dropped", "consent")]


@pytest.mark.parametrize(
    ("consent", "dropped"),
    [
        ({"consent": {"categoryPreferences": {"Advertising": False, "Analytics": True}}}, True),
        ({"consent": {"categoryPreferences": {"Advertising": True}}}, False),
        ({"consent": {"ad_storage": "denied"}}, True),
        ({"consent": "denied"}, True),
        ({"consentManagement": {"deniedConsentIds": ["Marketing"]}}, True),
        ({}, False),
    ],
)
def test_consent_that_denies_advertising_drops(client, site, work, consent, dropped):
    client.post("/v1/track", json=track(context=consent), headers=basic(site.write_key))
    work()
    assert (events()[0].reason == "consent") is dropped


def test_site_requiring_consent_drops_events_without_it(client, ctx, work):
    site = factories.site(require_consent=True)
    key = basic(site.write_key)
    client.post("/v1/track", json=track(), headers=key)
    granted = {"consent": {"categoryPreferences": {"advertising": True}}}
    client.post("/v1/track", json=track(context=granted), headers=key)
    work()
    assert [e.reason for e in events()] == ["consent", None]


def test_repeated_message_id_is_forwarded_once_within_48_hours(client, site, work, app):
    key = basic(site.write_key)
    for _ in range(3):
        assert client.post("/v1/track", json=track(messageId="m-1"), headers=key).status_code == 200
    batch = {"batch": [{"type": "track", "event": "X", "anonymousId": "a", "messageId": "m-2"}] * 2}
    client.post("/v1/batch", json=batch, headers=key)
    other = factories.site(name="Other shop")
    client.post("/v1/track", json=track(messageId="m-1"), headers=basic(other.write_key))
    work()
    got = [(e.site_id, e.message_id, e.reason) for e in events()]
    assert got == [
        (site.id, "m-1", None),
        (site.id, "m-1", "duplicate"),
        (site.id, "m-1", "duplicate"),
        (site.id, "m-2", None),
        (site.id, "m-2", "duplicate"),
        (other.id, "m-1", None),
    ]
    ttl = queues.redis_client().ttl(dedup_key(site.id, "m-1"))
    assert DEDUP_SECONDS - 60 < ttl <= DEDUP_SECONDS


def test_entry_read_twice_is_not_taken_for_a_duplicate(client, site):
    """An inbox entry read again (its worker died) still forwards its own events."""
    from xtag.pipeline import dedup

    client.post("/v1/track", json=track(messageId="once"), headers=basic(site.write_key))
    [entry] = inbox.peek(queues.redis_client())
    pairs = [(entry.id, e) for e in entry.events]
    assert dedup.duplicates(queues.redis_client(), pairs) == [False]
    assert dedup.duplicates(queues.redis_client(), pairs) == [False]  # read again
    assert dedup.duplicates(queues.redis_client(), [("9-0", entry.events[0])]) == [True]


def test_identify_traits_attach_to_later_events(client, site, work):
    key = basic(site.write_key)
    identify = {
        "anonymousId": "visitor-7",
        "traits": {"email": pii.RAW_EMAIL, "phone": pii.RAW_PHONE_E164},
    }
    assert client.post("/v1/identify", json=identify, headers=key).status_code == 200
    client.post("/v1/track", json=track(anonymousId="visitor-7"), headers=key)
    client.post("/v1/track", json=track(anonymousId="stranger"), headers=key)
    work()
    _, known, stranger = events()
    assert known.identifiers["hashed_email"] == hash_email(pii.RAW_EMAIL)
    assert known.identifiers["hashed_phone_number"] == hash_phone(pii.RAW_PHONE_E164)
    assert "hashed_email" not in stranger.identifiers
    ttls = [queues.redis_client().ttl(k) for k in queues.redis_client().scan_iter("xtag:traits:*")]
    assert ttls and all(29 * 86400 < t <= 30 * 86400 for t in ttls)


# --- CORS and origins ----------------------------------------------------------


def test_cors_preflight_answers_any_origin(client):
    r = client.options(
        "/v1/track",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]


def test_allowed_origin_passes_and_others_get_403(client, ctx):
    site = factories.site(allowed_origins=["https://shop.example"])
    key = basic(site.write_key)
    ok = client.post("/v1/track", json=track(), headers={**key, "Origin": "https://shop.example"})
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert ok.headers["Access-Control-Allow-Credentials"] == "true"
    bad = client.post("/v1/track", json=track(), headers={**key, "Origin": "https://evil.example"})
    assert bad.status_code == 403
    assert "https://evil.example" in bad.json["error"]
    assert "Access-Control-Allow-Origin" not in bad.headers
    assert queued() == 1


# --- 4xx ------------------------------------------------------------------------


def test_missing_and_unknown_write_keys_get_401(client, site):
    r = client.post("/v1/track", json=track())
    assert r.status_code == 401 and "write key" in r.json["error"]
    r = client.post("/v1/track", json=track(), headers=basic("no-such-key"))
    assert r.status_code == 401
    assert r.json == {
        "error": "unknown write key",
        "code": "unauthorized",
        "message": r.json["error"],
    }
    assert queued() == 0


@pytest.mark.parametrize(
    ("route", "body", "named"),
    [
        ("track", b"{not json", "not valid JSON"),
        ("track", b"", "empty"),
        ("track", b"[1, 2]", "JSON object"),
        ("track", {"anonymousId": "a"}, "event is required"),
        ("track", {"event": "", "anonymousId": "a"}, "event is required"),
        ("track", {"event": 42, "anonymousId": "a"}, "event is required"),
        ("track", {"event": "x" * 201, "anonymousId": "a"}, "event is longer"),
        ("track", {"event": "E"}, "userId or anonymousId is required"),
        ("track", {"event": "E", "anonymousId": {"a": 1}}, "anonymousId must be a string"),
        (
            "track",
            {"event": "E", "anonymousId": "a", "properties": [1]},
            "properties must be an object",
        ),
        ("track", {"event": "E", "anonymousId": "a", "context": "x"}, "context must be an object"),
        (
            "track",
            {"event": "E", "anonymousId": "a", "context": {"page": "x"}},
            "context.page must",
        ),
        ("track", {"event": "E", "anonymousId": "a", "context": {"ip": "999.1.1.1"}}, "context.ip"),
        ("track", {"event": "E", "anonymousId": "a", "context": {"twclid": 5}}, "context.twclid"),
        ("track", {"event": "E", "anonymousId": "a", "timestamp": "yesterday"}, "timestamp is not"),
        ("track", {"event": "E", "anonymousId": "a", "messageId": 7}, "messageId must be a string"),
        ("track", {"event": "E\u0000", "anonymousId": "a"}, "event may not contain NUL"),
        (
            "track",
            {"event": "E", "anonymousId": "a", "messageId": "m\u0000"},
            "messageId may not contain NUL",
        ),
        ("batch", {"batch": "nope"}, "batch must be a list"),
        ("batch", {"batch": []}, "batch is empty"),
        ("batch", {"batch": [{"event": "E", "anonymousId": "a"}]}, "batch[0].type is required"),
        (
            "batch",
            {"batch": [{"type": "boom", "anonymousId": "a"}]},
            "batch[0].type must be one of",
        ),
        ("batch", {"batch": [3, {"type": "track"}]}, "batch[0] must be a JSON object"),
    ],
)
def test_bad_input_gets_400_naming_the_problem(client, site, route, body, named):
    headers = basic(site.write_key)
    if isinstance(body, dict):
        r = client.post(f"/v1/{route}", json=body, headers=headers)
    else:
        r = client.post(f"/v1/{route}", data=body, content_type="application/json", headers=headers)
    assert r.status_code == 400, r.json
    assert named in r.json["error"]
    assert queued() == 0


def test_bad_gzip_and_unknown_encoding(client, site):
    headers = basic(site.write_key)
    r = client.post("/v1/track", data=b"not gzip", headers={**headers, "Content-Encoding": "gzip"})
    assert (r.status_code, r.json["error"]) == (400, "body is not valid gzip")
    r = client.post("/v1/track", data=b"{}", headers={**headers, "Content-Encoding": "br"})
    assert r.status_code == 415 and "gzip" in r.json["error"]


def test_message_over_32_kb_gets_413(client, site):
    big = track(properties={"blob": "x" * (33 * 1024)})
    r = client.post("/v1/track", json=big, headers=basic(site.write_key))
    assert r.status_code == 413 and "32 KB" in r.json["error"]
    assert r.json["code"] == "too_large" and r.json["message"] == r.json["error"]
    assert queued() == 0
    batch = {
        "batch": [{"type": "page", "anonymousId": "a"}, {"type": "page", "anonymousId": "a", **big}]
    }
    r = client.post("/v1/batch", json=batch, headers=basic(site.write_key))
    assert r.status_code == 200, r.json
    [refused] = r.json["refused"]
    assert refused["index"] == 1 and "32 KB" in refused["error"]
    assert queued() == 1  # the page view beside it


def test_batch_over_500_kb_gets_413(client, site):
    messages = [{"type": "page", "anonymousId": "a", "properties": {"p": "y" * 20_000}}] * 30
    r = client.post("/v1/batch", json={"batch": messages}, headers=basic(site.write_key))
    assert r.status_code == 413 and "500 KB" in r.json["error"]


def test_gzip_bomb_is_refused_after_500_kb_decompressed(client, site):
    bomb = gzip.compress(b'{"batch": [' + b" " * (5 * 1024 * 1024) + b"]}")
    assert len(bomb) < 10_000
    r = client.post(
        "/v1/batch", data=bomb, headers={**basic(site.write_key), "Content-Encoding": "gzip"}
    )
    assert r.status_code == 413 and "decompressed" in r.json["error"]


def test_wrong_method_and_unknown_route_answer_json(client):
    assert client.get("/v1/track").status_code == 405
    assert client.get("/v1/track").json["error"]
    r = client.post("/v1/nothing", json={})
    assert r.status_code == 404 and r.json["error"]


# --- 503 -------------------------------------------------------------------------


def test_redis_down_gets_503_with_retry_after(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    with app.app_context():
        site = factories.site(name="no redis")
        r = app.test_client().post("/v1/track", json=track(), headers=basic(site.write_key))
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) > 0
    assert "retry" in r.json["error"]


def test_analytics_next_short_paths_and_other_segment_types(client, site, work):
    key = basic(site.write_key)
    assert client.post("/v1/t", json=track(), headers=key).status_code == 200
    assert client.post("/v1/p", json={"anonymousId": "a"}, headers=key).status_code == 200
    batch = {
        "batch": [{"type": "alias", "userId": "u", "previousId": "a"}],
        "writeKey": site.write_key,
    }
    assert client.post("/v1/b", json=batch).status_code == 200
    assert (
        client.post(
            "/v1/screen", json={"anonymousId": "a", "name": "Home"}, headers=key
        ).status_code
        == 200
    )
    assert client.options("/v1/t", headers={"Origin": "https://a.example"}).status_code == 204
    work()
    got = [(e.type, e.event_name, e.outcome) for e in events()]
    assert got == [
        ("track", "Order Completed", "unmapped"),
        ("page", "page", "unmapped"),
        ("alias", None, "ignored"),
        ("screen", "screen", "unmapped"),
    ]


def test_an_entry_that_cannot_be_recorded_is_set_aside_and_intake_goes_on(client, site, app, work):
    key = basic(site.write_key)
    client.post("/v1/track", json=track(messageId="before"), headers=key)
    inbox.add(queues.redis_client(), [{"site_id": site.id, "message": {"type": "track"}}])  # broken
    client.post("/v1/track", json=track(messageId="after"), headers=key)
    work()
    assert [e.message_id for e in events()] == ["before", "after"]
    [dead] = queues.redis_client().xrange(inbox.DEAD)
    assert dead[1][b"reason"] == b"KeyError"
    assert inbox.depth(queues.redis_client()) == 0


def test_integers_beyond_64_bits_are_kept_and_nan_is_refused(client, site, work):
    headers = basic(site.write_key)
    nan = b'{"event": "Odd", "anonymousId": "a", "properties": {"odd": NaN}}'
    r = client.post("/v1/track", data=nan, content_type="application/json", headers=headers)
    assert (r.status_code, r.json["error"]) == (400, "body is not valid JSON")
    body = b'{"event": "Big", "anonymousId": "a", "properties": {"big": 1180591620717411303424}}'
    r = client.post("/v1/track", data=body, content_type="application/json", headers=headers)
    assert r.status_code == 200
    work()
    [event] = events()
    assert event.message["properties"]["big"] == 2**70
