"""Visitor memory: what xtag learned of a visitor (click id, identify traits)
fills in their later events, whichever client sends them and however the
worker's reads split; alias and an identify with both ids link two ids."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.support import factories
from tests.support.sending import basic
from tests.support.shop import events, setup_shop
from xtag.core.identity import hash_email
from xtag.extensions import db
from xtag.models import DeliveryItem
from xtag.pipeline import consuming, queues, visitors

EMAIL = "visitor@example.com"


@pytest.fixture
def site(ctx):
    return factories.site()


def post(app, site, route: str, message: dict) -> None:
    """Each call from a fresh client: no cookie carries the click id over."""
    r = app.test_client().post(f"/v1/{route}", json=message, headers=basic(site.write_key))
    assert r.status_code == 200, r.json


def landing(anon: str) -> dict:
    return {"anonymousId": anon, "context": {"page": {"url": "https://shop.example/?twclid=tw-9"}}}


def order(**ids) -> dict:
    return {"event": "Order Completed", "properties": {"order_id": "A-1"}, **ids}


@pytest.mark.parametrize("separate_reads", [True, False])
def test_the_click_id_of_the_landing_page_reaches_the_order(app, site, work, separate_reads):
    post(app, site, "page", landing("a-1"))
    if separate_reads:
        work()
    post(app, site, "track", order(anonymousId="a-1"))
    work()
    page, bought = events()
    assert page.identifiers["twclid"] == bought.identifiers["twclid"] == "tw-9"


def test_identify_with_both_ids_links_them_for_a_server_sdk(app, site, work):
    post(app, site, "page", landing("a-1"))
    identify = {"anonymousId": "a-1", "userId": "u-1", "traits": {"email": EMAIL}}
    post(app, site, "identify", identify)
    work()
    server = {"library": {"name": "analytics-python", "version": "2.4.0"}}
    post(app, site, "track", order(userId="u-1", context=server))
    work()
    bought = events()[-1]
    assert bought.identifiers["twclid"] == "tw-9"
    assert bought.identifiers["hashed_email"] == hash_email(EMAIL)


def test_alias_links_the_previous_id_to_the_user(app, site, work):
    post(app, site, "page", landing("a-2"))
    post(app, site, "alias", {"previousId": "a-2", "userId": "u-2"})
    work()
    post(app, site, "track", order(userId="u-2"))
    work()
    assert events()[-1].identifiers["twclid"] == "tw-9"


def test_memory_is_per_site_and_per_visitor(app, site, work):
    other_site = factories.site(name="Other")
    post(app, site, "page", landing("a-3"))
    work()
    post(app, other_site, "track", order(anonymousId="a-3"))
    post(app, site, "track", order(anonymousId="someone-else"))
    work()
    assert [e.identifiers.get("twclid") for e in events()] == ["tw-9", None, None]


def test_a_visitor_is_one_small_hash_its_links_included(app, site, work):
    post(app, site, "page", landing("a-4"))
    post(app, site, "identify", {"anonymousId": "a-4", "userId": "u-4", "traits": {"email": EMAIL}})
    work()
    client = queues.redis_client(app)
    anon, user = (
        visitors.visitor_key(site.id, k, v).encode() for k, v in (("anon", "a-4"), ("user", "u-4"))
    )
    assert sorted(client.scan_iter("xtag:traits:*")) == sorted([anon, user])
    assert list(client.scan_iter("xtag:links:*")) == []
    fields = client.hgetall(anon)
    assert fields[b"t"] == b"tw-9" and fields[b"e"] == hash_email(EMAIL).encode()
    assert visitors.LINK.encode() + user.rsplit(b":", 1)[1] in fields
    assert client.object("encoding", anon) in (b"listpack", b"ziplist")


def test_an_anonymous_id_sent_with_many_user_ids_takes_only_so_many_links(app, site, work):
    """The write key is public: one anonymousId identified as 100 users
    (one batch, as an attacker would send it) links to the first MAX_LINKS
    only, so its events never make Redis read every one of them; each user
    still reads what the anonymous visitor brought."""
    post(app, site, "page", landing("a-5"))
    work()
    identifies = [
        {
            "type": "identify",
            "anonymousId": "a-5",
            "userId": f"u-{n}",
            "traits": {"email": f"{n}@x.example"},
        }
        for n in range(100)
    ]
    post(app, site, "batch", {"batch": identifies})
    work()
    anon = visitors.visitor_key(site.id, "anon", "a-5")
    fields = queues.redis_client(app).hkeys(anon)
    assert sum(f.startswith(visitors.LINK.encode()) for f in fields) == visitors.MAX_LINKS
    post(app, site, "track", order(userId="u-99"))
    post(app, site, "track", order(anonymousId="a-5", properties={"order_id": "A-2"}))
    work()
    last_user, anonymous = events()[-2:]
    assert last_user.identifiers["twclid"] == anonymous.identifiers["twclid"] == "tw-9"
    assert anonymous.identifiers["hashed_email"] in {
        hash_email(f"{n}@x.example") for n in range(100)
    }


def test_memory_written_before_the_short_names_is_still_read(app, site, work):
    """Keys of the former layout (long field names, links in a set) live on for
    30 days after an upgrade: their visitors keep what was learned of them."""
    client = queues.redis_client(app)
    anon, user = (
        visitors.visitor_key(site.id, "anon", "a-5"),
        visitors.visitor_key(site.id, "user", "u-5"),
    )
    client.hset(anon, mapping={"twclid": "tw-old", "hashed_email": hash_email(EMAIL)})
    client.sadd(anon.replace(":traits:", ":links:"), user)
    client.sadd(user.replace(":traits:", ":links:"), anon)
    post(app, site, "track", order(userId="u-5"))
    work()
    assert events()[-1].identifiers["hashed_email"] == hash_email(EMAIL)
    assert events()[-1].identifiers["twclid"] == "tw-old"
    post(app, site, "page", {**landing("a-5"), "context": {"twclid": "tw-new"}})
    post(app, site, "track", order(userId="u-5"))
    work()
    assert events()[-1].identifiers["twclid"] == "tw-new"  # the newer value wins


def test_the_latest_click_id_of_one_read_is_remembered(app, site, work):
    """Every read's writes go to Redis at once: the later event's value still wins."""
    post(app, site, "page", {**landing("a-6"), "context": {"twclid": "tw-first"}})
    post(app, site, "page", {**landing("a-6"), "context": {"twclid": "tw-later"}})
    work()
    post(app, site, "track", order(anonymousId="a-6"))
    work()
    assert events()[-1].identifiers["twclid"] == "tw-later"


# --- late binding: a track just before an identify, in separate reads ---------------------


@pytest.fixture
def shop_x(x_app, fake_x, ctx):
    x_app.config["XTAG_BATCH_WINDOW_MS"] = 1500  # time for the identify to follow
    return setup_shop(fake_x)


def record(app) -> None:
    """One read of the inbox by a worker, as a separate read from the next."""
    consuming.Consumer(app, name="reader").run_once()


@pytest.mark.parametrize("identify_first", [False, True])
def test_the_order_gets_the_email_whichever_comes_first(
    app, shop_x, deliver, fake_x, identify_first
):
    identify = {"anonymousId": "a-9", "traits": {"email": EMAIL}}
    steps = [("track", order(anonymousId="a-9")), ("identify", identify)]
    for route, message in reversed(steps) if identify_first else steps:
        post(app, shop_x, route, message)
        record(app)
    deliver()
    [sent] = fake_x.accepted()
    assert sent["identifiers"] == [{"hashed_email": hash_email(EMAIL)}]
    [bought] = [e for e in events() if e.event_name == "Order Completed"]
    assert (bought.outcome, bought.reason) == ("forwarded", None)


def test_an_order_nobody_identifies_in_its_window_is_dropped(app, shop_x, deliver, fake_x):
    post(app, shop_x, "track", order(anonymousId="a-10"))
    record(app)
    [waiting] = events()
    assert (waiting.outcome, waiting.reason) == ("waiting", "no_identifier")
    deliver()
    assert fake_x.accepted() == []
    [dropped] = events()
    # the pixels it was meant for stay: match quality counts the drop against them
    assert (dropped.outcome, dropped.reason) == ("dropped", "no_identifier")
    assert dropped.pixels == waiting.pixels != []
    assert db.session.scalar(select(func.count(DeliveryItem.id))) == 0


def test_links_stored_before_the_bound_are_cut_to_it(app, site, work):
    """A key linked to 500 others before links were bounded keeps MAX_LINKS
    of them once its visitor is seen again."""
    client = queues.redis_client(app)
    anon = visitors.visitor_key(site.id, "anon", "a-6")
    client.hset(anon, mapping={f"{visitors.LINK}{n:032x}": "" for n in range(500)} | {"t": "tw-6"})
    post(app, site, "track", order(anonymousId="a-6"))
    work()
    assert events()[-1].identifiers["twclid"] == "tw-6"
    fields = client.hkeys(anon)
    assert sum(f.startswith(visitors.LINK.encode()) for f in fields) == visitors.MAX_LINKS
