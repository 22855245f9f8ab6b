"""Abuse limits: a write key is public, so each site's intake has a token
bucket (its rate, with a burst of 10 seconds of it; counted in Redis across
processes) that refuses the addresses sending the most first; API tokens
are capped per minute."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from tests.support import factories
from tests.support.sending import basic, queued, track
from tests.support.web import token_for
from xtag.extensions import db
from xtag.models import ReceivedEvent
from xtag.pipeline.inbox import BURST_SECONDS, Leases


def batch(site, n: int) -> dict:
    return {
        "json": {"batch": [track(type="track", messageId=f"m-{i}") for i in range(n)]},
        "headers": basic(site.write_key),
    }


def received(site) -> int:
    return db.session.scalar(
        select(func.count(ReceivedEvent.id)).where(ReceivedEvent.site_id == site.id)
    )


def test_a_flood_from_one_site_gets_429_while_another_site_flows(app, make_app, ctx, work):
    flooded = factories.site(name="Flooded", rate_limit=3)  # a burst of 30 events
    quiet = factories.site(name="Quiet")
    # two apps on the same Redis stand for two web processes: the buckets are shared
    processes = [app.test_client(), make_app(XTAG_SITE_CACHE_SECONDS="0").test_client()]
    answers = [processes[i % 2].post("/v1/batch", **batch(flooded, 10)) for i in range(12)]
    codes = [r.status_code for r in answers]
    quiet_answers = [processes[i % 2].post("/v1/batch", **batch(quiet, 1)) for i in range(20)]

    assert codes[0] == 200 and codes.count(429) >= 8, codes  # 120 events against 30 at once
    refused = next(r for r in answers if r.status_code == 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 11
    assert "more than 3 events per second" in refused.json["error"]
    assert refused.json["code"] == "rate_limited"
    assert [r.status_code for r in quiet_answers] == [200] * 20
    # only what was answered 200 was queued, and the worker records exactly that
    assert queued() == codes.count(200) + 20
    work()
    assert received(flooded) == 10 * codes.count(200)
    assert received(quiet) == 20


def test_the_server_default_applies_to_sites_without_their_own_limit(make_app, ctx):
    site = factories.site()
    client = make_app(XTAG_SITE_RATE_LIMIT="1", XTAG_SITE_CACHE_SECONDS="0").test_client()
    codes = [client.post("/v1/batch", **batch(site, 10)).status_code for _ in range(4)]
    assert codes[0] == 200 and 429 in codes
    site.rate_limit = 1000  # a site's own limit overrides the default
    db.session.commit()
    time.sleep(0.1)  # the bucket refills at the new rate
    assert [client.post("/v1/batch", **batch(site, 10)).status_code for _ in range(4)] == [200] * 4


def test_one_request_is_never_refused_for_its_size_alone(make_app, ctx):
    """An SDK flushing its queue after an outage: its big batch lands, and
    only the requests after it wait for the bucket to refill."""
    site = factories.site(rate_limit=5)  # a burst of 50 events
    client = make_app(XTAG_SITE_CACHE_SECONDS="0").test_client()
    assert client.post("/v1/batch", **batch(site, 2000)).status_code == 200
    r = client.post("/v1/batch", **batch(site, 1))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 300


@pytest.mark.parametrize("limit, per_request", [(20, 1), (200, 5)])
def test_one_address_flooding_a_site_never_refuses_its_other_visitors(make_app, ctx, limit,
                                                                      per_request):  # fmt: skip
    """A site limited to `limit` events/s; one address sends 10 times that
    while another visitor sends an event every half second: the visitor
    always gets 200, the flood is refused. At 200 events/s the process takes
    tokens ahead in leases, and the flood's events are still its address's."""
    site = factories.site(rate_limit=limit)
    client = make_app().test_client()  # the write key cached, as in production
    flood, visitor = {"REMOTE_ADDR": "198.51.100.66"}, {"REMOTE_ADDR": "203.0.113.7"}
    flood_body = {"batch": [track(type="track") for _ in range(per_request)]}
    started, next_visit = time.monotonic(), 0.0
    flood_codes, visitor_codes = [], []
    while (now := time.monotonic() - started) < 4:
        if now >= next_visit:
            r = client.post("/v1/track", json=track(), headers=basic(site.write_key),
                            environ_base=visitor)  # fmt: skip
            visitor_codes.append(r.status_code)
            next_visit += 0.5
        r = client.post("/v1/batch", json=flood_body, headers=basic(site.write_key),
                        environ_base=flood)  # fmt: skip
        flood_codes.append(r.status_code)
        asked = len(flood_codes) * per_request / (10 * limit)  # when this many were due
        time.sleep(max(0.0, asked - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    assert len(flood_codes) * per_request >= 20 * limit  # at least 5 times the limit sent
    assert visitor_codes == [200] * len(visitor_codes) and len(visitor_codes) == 8
    assert flood_codes.count(429) > len(flood_codes) / 2
    # the top half of the burst, then what the site's bucket refills, not more (but
    # for the tokens one process may hold ahead in a lease)
    taken = flood_codes.count(200) * per_request
    assert taken <= limit * (BURST_SECONDS / 2 + elapsed) + Leases.size(limit) + per_request


def test_the_limit_holds_across_processes_taking_tokens_ahead(app, make_app, ctx):
    """Two web processes share a site's bucket at 400 events/s (a burst of
    4,000), sent from four addresses: each process leases tokens ahead, yet
    together they take the burst and the rate, not more, and not much less."""
    site = factories.site(rate_limit=400)
    processes = [app.test_client(), make_app().test_client()]
    body = {"json": {"batch": [track(type="track") for _ in range(10)]},
            "headers": basic(site.write_key)}  # fmt: skip
    started, taken, refused = time.monotonic(), 0, 0
    while refused < 20:
        sent = taken + refused
        address = {"REMOTE_ADDR": f"198.51.100.{sent % 4}"}
        r = processes[sent % 2].post("/v1/batch", **body, environ_base=address)
        assert r.status_code in (200, 429), r.json
        taken, refused = taken + (r.status_code == 200), refused + (r.status_code == 429)
    elapsed = time.monotonic() - started
    events = taken * 10
    assert 4000 <= events <= 4000 + 400 * elapsed + 2 * 20, (events, elapsed)


def test_a_site_limit_is_set_through_the_api_and_checked(client, ctx):
    headers = token_for("admin")
    site = client.post("/api/v1/sites", json={"name": "Shop", "rate_limit": 50}, headers=headers)
    assert site.status_code == 201 and site.json["rate_limit"] == 50
    r = client.patch(f"/api/v1/sites/{site.json['id']}", json={"rate_limit": 0}, headers=headers)
    assert r.status_code == 400 and r.json["error"]["field"] == "rate_limit"
    r = client.patch(f"/api/v1/sites/{site.json['id']}", json={"rate_limit": None}, headers=headers)
    assert r.status_code == 200 and r.json["rate_limit"] is None


def test_api_tokens_are_limited_per_minute_each(make_app, ctx):
    client = make_app(XTAG_API_RATE_LIMIT="5").test_client()
    busy, other = token_for("admin"), token_for("marketer")
    codes = [client.get("/api/v1/sites", headers=busy).status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2
    r = client.get("/api/v1/sites", headers=busy)
    assert r.json["error"]["code"] == "too_many_requests"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert client.get("/api/v1/sites", headers=other).status_code == 200


def test_guessing_tokens_from_one_address_is_cut_off(make_app, ctx):
    client = make_app(XTAG_API_RATE_LIMIT="600").test_client()
    wrong = {"Authorization": "Bearer not-a-token"}
    if time.time() % 60 > 55:  # the 31 requests inside one minute's window
        time.sleep(60.1 - time.time() % 60)
    codes = [client.get("/api/v1/sites", headers=wrong).status_code for _ in range(31)]
    assert codes == [401] * 30 + [429]
    # a valid token from that address is never locked out by the wrong ones
    assert client.get("/api/v1/sites", headers=token_for("admin")).status_code == 200
    other = {"REMOTE_ADDR": "10.1.2.3"}
    r = client.get("/api/v1/sites", headers=token_for("marketer"), environ_base=other)
    assert r.status_code == 200


def test_made_up_write_keys_are_throttled_per_address(make_app, ctx):
    site = factories.site()
    client = make_app().test_client()
    attacker, visitor = {"REMOTE_ADDR": "198.51.100.9"}, {"REMOTE_ADDR": "203.0.113.8"}
    codes = [
        client.post(
            "/v1/track", json=track(), headers=basic(f"made-up-{n}"), environ_base=attacker
        ).status_code
        for n in range(130)
    ]
    assert codes[:120] == [401] * 120 and set(codes[120:]) == {429}
    r = client.post("/v1/track", json=track(), headers=basic(site.write_key), environ_base=visitor)
    assert r.status_code == 200


def test_a_flood_of_unknown_keys_never_evicts_known_ones(app, ctx, monkeypatch):
    from sqlalchemy import event

    from xtag.services import writekeys

    monkeypatch.setattr(writekeys, "UNKNOWN_MAX", 50)
    site = factories.site()
    engine = db.engine
    queries = []

    def count(*_):
        queries.append(1)

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert writekeys.lookup(engine, site.write_key, ttl=60).id == site.id
        for n in range(200):
            assert writekeys.lookup(engine, f"made-up-{n}", ttl=60) is None
        before = len(queries)
        assert writekeys.lookup(engine, site.write_key, ttl=60).id == site.id  # still cached
        assert writekeys.lookup(engine, "made-up-199", ttl=60) is None  # recent: cached too
        assert len(queries) == before
    finally:
        event.remove(engine, "before_cursor_execute", count)
