"""Abuse limits: a write key is public, so each site's intake is capped per
second (counted in Redis, across processes); API tokens are capped per minute."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.support import factories
from tests.support.sending import basic, queued, track
from tests.support.web import token_for
from xtag.extensions import db
from xtag.models import ReceivedEvent


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
    flooded = factories.site(name="Flooded", rate_limit=30)
    quiet = factories.site(name="Quiet")
    # two apps on the same Redis stand for two web processes: the count is shared
    processes = [app.test_client(), make_app(XTAG_SITE_CACHE_SECONDS="0").test_client()]
    answers = [processes[i % 2].post("/v1/batch", **batch(flooded, 10)) for i in range(12)]
    codes = [r.status_code for r in answers]
    quiet_answers = [processes[i % 2].post("/v1/batch", **batch(quiet, 1)) for i in range(20)]

    assert codes.count(429) >= 6, codes  # 12 x 10 events against 30 a second
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["Retry-After"] in {"1", "2"}
    assert "more than 30 events per second" in refused.json["error"]
    assert [r.status_code for r in quiet_answers] == [200] * 20
    # only what was answered 200 was queued, and the worker records exactly that
    assert queued() == codes.count(200) + 20
    work()
    assert received(flooded) == 10 * codes.count(200)
    assert received(quiet) == 20


def test_the_server_default_applies_to_sites_without_their_own_limit(make_app, ctx):
    site = factories.site()
    client = make_app(XTAG_SITE_RATE_LIMIT="15", XTAG_SITE_CACHE_SECONDS="0").test_client()
    codes = [client.post("/v1/batch", **batch(site, 10)).status_code for _ in range(4)]
    assert 429 in codes and codes[0] == 200
    site.rate_limit = 1000  # a site's own limit overrides the default
    db.session.commit()
    assert [client.post("/v1/batch", **batch(site, 10)).status_code for _ in range(4)] == [200] * 4


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
    codes = [client.get("/api/v1/sites", headers=wrong).status_code for _ in range(31)]
    assert codes == [401] * 30 + [429]
    # from that address even a good token waits now; the limit is per address
    assert client.get("/api/v1/sites", headers=token_for("admin")).status_code == 429
    other = {"REMOTE_ADDR": "10.1.2.3"}
    r = client.get("/api/v1/sites", headers=token_for("marketer"), environ_base=other)
    assert r.status_code == 200
