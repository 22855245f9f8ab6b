"""Each retention policy deletes or empties what is past its period, nothing newer."""

from datetime import timedelta

from sqlalchemy import select

from tests.support import factories
from tests.support.sending import basic, order
from tests.support.shop import setup_shop
from xtag.extensions import db
from xtag.models import AuditEntry, DeliveryAttempt, DeliveryItem, ReceivedEvent, utcnow
from xtag.pipeline import consuming, retention


def test_worker_purges_events_past_retention(app, ctx):
    app.config["XTAG_EVENT_RETENTION_DAYS"] = 30
    site = factories.site()
    for age in (31, 29, 0):
        db.session.add(
            ReceivedEvent(
                site_id=site.id,
                type="track",
                event_name=f"{age} days old",
                received_at=utcnow() - timedelta(days=age),
                outcome="unmapped",
            )
        )
    db.session.commit()
    consuming.Consumer(app, name="w").run_due()  # the worker's scheduled work, all due at start
    db.session.expire_all()
    kept = [
        e.event_name for e in db.session.scalars(select(ReceivedEvent).order_by(ReceivedEvent.id))
    ]
    assert kept == ["29 days old", "0 days old"]


def test_delivery_bodies_and_audit_entries_have_their_own_periods(
    x_app, client, ctx, fake_x, deliver
):
    site = setup_shop(fake_x)
    fake_x.fail_next(403)  # this one fails: its conversion must stay for a retry by hand
    client.post("/v1/batch", json={"batch": [order(1)]}, headers=basic(site.write_key))
    deliver()
    client.post("/v1/batch", json={"batch": [order(2)]}, headers=basic(site.write_key))
    deliver()
    db.session.add(AuditEntry(action="update", object_type="site", object_id="1"))
    db.session.commit()
    old = utcnow() - timedelta(days=15)
    for model in (DeliveryAttempt, DeliveryItem):
        db.session.execute(model.__table__.update().values(created_at=old))
    db.session.execute(
        AuditEntry.__table__.update().values(created_at=utcnow() - timedelta(days=366))
    )
    db.session.commit()

    assert retention.purge() == {"events": 0, "delivery_bodies": 3, "audit": 1}
    assert retention.purge() == {"events": 0, "delivery_bodies": 0, "audit": 0}  # done once
    db.session.expire_all()
    assert all(a.request_body is None for a in db.session.scalars(select(DeliveryAttempt)))
    items = {i.status: i.conversion for i in db.session.scalars(select(DeliveryItem))}
    assert items["delivered"] == {} and items["failed"]["conversion_id"] == "order-1"
    assert db.session.scalars(select(AuditEntry)).all() == []


def test_alerts_that_ended_go_with_the_audit_period_and_open_ones_stay(ctx):
    from xtag.models import Alert

    long_ago = utcnow() - timedelta(days=400)
    db.session.add_all(
        [
            Alert(kind="site_silent", subject="site:1", message="old", since=long_ago,
                  ended_at=long_ago + timedelta(hours=1)),
            Alert(kind="site_silent", subject="site:2", message="open", since=long_ago),
            Alert(kind="site_silent", subject="site:3", message="recent", since=utcnow(),
                  ended_at=utcnow()),
        ]
    )  # fmt: skip
    db.session.commit()
    assert retention.purge()["audit"] == 1
    assert sorted(a.message for a in db.session.scalars(select(Alert))) == ["open", "recent"]
