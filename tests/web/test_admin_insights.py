"""The admin's first-run checklist, test mode, test events, the match-quality
panel and replays, as a marketer and an admin use them."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from tests.support import factories
from tests.support.sending import order, send
from tests.support.shop import PIXEL, deliveries, events, setup_shop
from tests.support.web import csrf, login
from xtag.core.times import iso
from xtag.extensions import db
from xtag.models import Connection, Mapping, Replay, Site, utcnow


def steps(page: str) -> dict[str, bool]:
    """The checklist's steps and whether each is ticked."""
    return {
        key: "done" in cls
        for cls, key in re.findall(r'<li class="([^"]*)" data-step="(\w+)"', page)
    }


def test_the_first_run_checklist_ticks_itself_from_real_data(x_app, client, ctx, fake_x, deliver):
    login(client, "admin")
    page = client.get("/").get_data(as_text=True)
    assert steps(page) == dict.fromkeys(
        ("connection", "site", "mapping", "first_event", "first_conversion"), False
    )
    assert 'href="/connections"' in page and 'href="/sites"' in page  # each step links its page

    site = factories.site(name="Shop")
    page = client.get("/").get_data(as_text=True)
    assert steps(page)["site"] and not steps(page)["connection"]
    assert f'href="/sites/{site.id}/mappings"' in page

    site = setup_shop(fake_x)
    sites_test_event = client.post(
        f"/sites/{site.id}/test-event", data={"csrf_token": csrf(client, f"/sites/{site.id}")}
    )
    assert sites_test_event.status_code == 302
    deliver()
    ticked = steps(client.get("/").get_data(as_text=True))
    assert ticked["connection"] and ticked["mapping"]
    assert not ticked["first_event"]  # a test event says nothing of the snippet

    send(client, site, [order(1)])
    deliver()
    assert "Getting started" not in client.get("/").get_data(as_text=True)


def test_test_mode_is_a_switch_on_the_site_page_with_a_badge_everywhere(client, ctx):
    login(client)
    site = factories.site(name="Shop")
    form = {
        "csrf_token": csrf(client, f"/sites/{site.id}"),
        "name": "Shop",
        "test_mode": "y",
        "x_pixel_id": "O8Z6J",
        "silence_alert_hours": "6",
    }
    assert client.post(f"/sites/{site.id}", data=form).status_code == 302
    db.session.expire_all()
    saved = db.session.get(Site, site.id)
    assert (saved.test_mode, saved.x_pixel_id, saved.silence_alert_hours) == (True, "o8z6j", 6.0)
    for path in ("/", "/sites", f"/sites/{site.id}", f"/sites/{site.id}/mappings"):
        assert "TEST MODE" in client.get(path).get_data(as_text=True), path

    form = {**form, "csrf_token": csrf(client, f"/sites/{site.id}"), "silence_alert_hours": "0"}
    del form["test_mode"]
    page = client.post(f"/sites/{site.id}", data=form).get_data(as_text=True)
    assert "silence_alert_hours must be over 0" in page
    form["silence_alert_hours"] = ""
    assert client.post(f"/sites/{site.id}", data=form).status_code == 302
    db.session.expire_all()
    assert db.session.get(Site, site.id).test_mode is False
    assert "TEST MODE" not in client.get("/sites").get_data(as_text=True)


def test_a_test_event_shows_in_the_debugger_as_a_test_delivery(x_app, client, ctx, fake_x, deliver):
    login(client)
    site = setup_shop(fake_x)
    page = client.get(f"/sites/{site.id}").get_data(as_text=True)
    assert "<option>Order Completed</option>" in page
    r = client.post(
        f"/sites/{site.id}/test-event",
        data={"csrf_token": csrf(client, f"/sites/{site.id}"), "event_name": "Order Completed"},
    )
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/events?site_id={site.id}")
    deliver()
    debugger = client.get(f"/events?site_id={site.id}").get_data(as_text=True)
    assert "Order Completed" in debugger and ">TEST</span>" in debugger
    assert fake_x.requests == []
    [delivery] = deliveries()
    log = client.get("/deliveries?status=test").get_data(as_text=True)
    assert f"/deliveries/{delivery.id}" in log
    detail = client.get(f"/deliveries/{delivery.id}").get_data(as_text=True)
    assert "not sent to X" in detail and events()[0].message_id in detail


def test_the_quality_panel_shows_the_score_and_what_to_add(x_app, client, ctx, fake_x, deliver):
    login(client)
    site = setup_shop(fake_x)
    send(client, site, [order(n) for n in range(6)])
    deliver()
    page = client.get("/").get_data(as_text=True)
    assert f'data-pixel="{PIXEL}"' in page
    assert '<strong class="score">100.0%</strong>' in page
    assert "100% of Order Completed conversions carry no email" in page


def test_an_admin_dry_runs_then_replays_a_window(x_app, client, ctx, fake_x, deliver):
    login(client, "admin")
    site = setup_shop(fake_x)
    send(client, site, [order(n, event="Order Placed") for n in range(3)])
    deliver()
    db.session.scalars(select(Mapping)).one().event_name = "Order Placed"
    db.session.commit()
    since, until = iso(utcnow() - timedelta(hours=1)), iso(utcnow() + timedelta(minutes=1))
    form = {"site_id": site.id, "since": since, "until": until, "dry_run": "y"}
    r = client.post("/replays", data={**form, "csrf_token": csrf(client, "/replays")})
    assert r.status_code == 302
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "(dry run)" in page and "<code>o8z6j</code></td><td>3</td>" in page
    assert "Replay this window for real" in page
    real = {k: v for k, v in form.items() if k != "dry_run"}
    r = client.post("/replays", data={**real, "csrf_token": csrf(client, "/replays")})
    deliver()
    assert len(fake_x.accepted()) == 3
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Status: <strong>done</strong>" in page
    assert len(db.session.scalars(select(Replay)).all()) == 2

    bad = {**form, "since": "last week", "csrf_token": csrf(client, "/replays")}
    assert "since must be an ISO 8601 time" in client.post("/replays", data=bad).get_data(
        as_text=True
    )


def test_marketers_cannot_replay(client, ctx):
    login(client)
    assert client.get("/replays").status_code == 403
    assert db.session.scalar(select(Connection)) is None
