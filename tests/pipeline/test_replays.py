"""Replay: after a mapping is fixed, a window of received events runs again
through today's mappings; each order reaches X once, and a second replay of
the same window sends nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.support.sending import order, send
from tests.support.shop import EVENT, PIXEL, events, setup_shop
from tests.support.web import token_for
from xtag.core.times import iso
from xtag.extensions import db
from xtag.models import AuditEntry, Mapping, utcnow


@pytest.fixture
def shop(ctx, fake_x):
    return setup_shop(fake_x)


@pytest.fixture
def admin(ctx):
    return token_for("admin")


def window(site, **extra) -> dict:
    now = utcnow()
    return {
        "site_id": site.id,
        "since": iso(now - timedelta(hours=1)),
        "until": iso(now + timedelta(minutes=1)),
        **extra,
    }


def replay(client, admin, body, status=201) -> dict:
    r = client.post("/api/v1/replays", json=body, headers=admin)
    assert r.status_code == status, r.json
    return r.json


def fix_the_mapping(site) -> None:
    """The site sends "Order Placed"; the mapping named "Order Completed"."""
    row = db.session.scalars(select(Mapping).where(Mapping.site_id == site.id)).one()
    row.event_name = "Order Placed"
    db.session.commit()


def test_a_day_of_unmapped_orders_is_replayed_once(x_app, client, shop, admin, fake_x, deliver):
    send(client, shop, [order(n, event="Order Placed") for n in range(1000)])
    deliver(timeout=60)
    assert fake_x.requests == [] and {e.outcome for e in events()} == {"unmapped"}
    fix_the_mapping(shop)

    dry = replay(client, admin, window(shop, dry_run=True))
    assert (dry["status"], dry["dry_run"], dry["events"]) == ("done", True, 1000)
    assert dry["conversions"] == {PIXEL: 1000} and dry["older_than_48h"] == 0
    deliver()
    assert fake_x.requests == []  # a dry run sends nothing

    started = replay(client, admin, window(shop, dry_run=False))
    assert started["status"] == "queued"
    deliver(timeout=60)
    sent = fake_x.accepted(PIXEL)
    assert sorted(c["conversion_id"] for c in sent) == sorted(f"order-{n}" for n in range(1000))
    assert {c["event_id"] for c in sent} == {EVENT}
    assert len(fake_x.requests) == 2  # batches of 500
    progress = client.get(f"/api/v1/replays/{started['id']}", headers=admin).json
    assert (progress["status"], progress["events"], progress["total"]) == ("done", 1000, 1000)
    assert progress["conversions"] == {PIXEL: 1000}
    assert {(e.outcome, e.reason) for e in events()} == {("forwarded", "replayed")}

    again = replay(client, admin, window(shop))
    deliver()
    assert len(fake_x.requests) == 2  # nothing more reached X
    done = client.get(f"/api/v1/replays/{again['id']}", headers=admin).json
    assert (done["conversions"], done["skipped"]) == ({}, 1000)


def test_what_was_dropped_on_purpose_or_delivered_is_not_replayed(
    x_app, client, shop, admin, fake_x, deliver
):
    send(
        client,
        shop,
        [
            order(1),  # delivered at once
            order(2, integrations={"X": False}),
            order(3, context={"twclid": "tw-3", "consent": {"advertising": False}}),
            order(4),
            order(4),  # the same messageId again: a duplicate
        ],
    )
    deliver()
    assert sorted(c["conversion_id"] for c in fake_x.accepted()) == ["order-1", "order-4"]
    result = replay(client, admin, window(shop))
    deliver()
    assert len(fake_x.accepted()) == 2
    done = client.get(f"/api/v1/replays/{result['id']}", headers=admin).json
    assert (done["status"], done["conversions"], done["skipped"]) == ("done", {}, 2)
    assert done["events"] == done["total"] == 2  # what was dropped on purpose is not read


def test_a_dry_run_warns_of_conversions_older_than_48_hours(client, shop, admin, work):
    three_days_ago = iso(utcnow() - timedelta(days=3))
    send(client, shop, [order(1, event="Order Placed", timestamp=three_days_ago), order(2)])
    work()
    fix_the_mapping(shop)
    dry = replay(client, admin, window(shop, dry_run=True, event_name="Order Placed"))
    assert (dry["events"], dry["conversions"], dry["older_than_48h"]) == (1, {PIXEL: 1}, 1)
    assert "48 hours" in dry["warning"]


def test_replays_are_for_admins_and_audited(client, shop, admin):
    marketer = token_for("marketer")
    r = client.post("/api/v1/replays", json=window(shop), headers=marketer)
    assert r.status_code == 403
    made = replay(client, admin, window(shop, dry_run=True))
    assert client.get(f"/api/v1/replays/{made['id']}", headers=marketer).status_code == 200
    assert client.get("/api/v1/replays/999999", headers=admin).status_code == 404
    [entry] = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "replay")).all()
    assert entry.object_id == str(shop.id) and entry.changes["dry_run"] is True


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"since": "yesterday"}, "since", 400),
        ({"until": "2020-01-01T00:00:00Z"}, "until", 400),
        ({"dry_run": "yes"}, "dry_run", 400),
        ({"extra": 1}, "extra", 400),
        ({"site_id": 999999}, "site_id", 422),  # as for any reference to a missing row
    ],
)
def test_a_bad_replay_request_is_refused_naming_the_field(
    client, shop, admin, change, field, status
):
    body = replay(client, admin, {**window(shop), **change}, status=status)
    assert body["error"]["field"] == field
