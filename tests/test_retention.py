"""Received events are deleted after the retention period, newer ones kept."""

from datetime import timedelta

from sqlalchemy import select

from tests import factories
from xtag import worker
from xtag.extensions import db
from xtag.models import ReceivedEvent, utcnow


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
    worker.Intake(app, name="w").sweep()
    db.session.expire_all()
    kept = [
        e.event_name for e in db.session.scalars(select(ReceivedEvent).order_by(ReceivedEvent.id))
    ]
    assert kept == ["29 days old", "0 days old"]
