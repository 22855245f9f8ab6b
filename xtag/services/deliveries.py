"""Retrying deliveries by hand: one, or every failed one a filter selects,
each audited; the admin, the API and the CLI all come here."""

from __future__ import annotations

from datetime import datetime

from xtag.core.errors import Conflict
from xtag.core.times import iso
from xtag.extensions import db
from xtag.models import Delivery, User, utcnow
from xtag.pipeline.sending import retry_later
from xtag.services.changes import audit
from xtag.services.queries import deliveries

RETRYABLE = ("failed", "partial")


AGAIN = ("failed", "rejected")  # a rejection is resent too: the admin fixed its cause at X


def _queue_again(delivery: Delivery) -> bool:
    """Queue a failed or partial delivery again: its conversions that did not
    reach X, or that X rejected, are sent once more with a fresh schedule."""
    if delivery.status not in RETRYABLE:
        return False
    again = [i for i in delivery.items if i.status in AGAIN]
    if not again:
        return False
    for item in again:
        item.status, item.error = "sending", None
    delivery.status, delivery.retries = "retrying", 0
    retry_later(delivery, utcnow())  # commits
    return True


def retry(actor: User | None, delivery: Delivery) -> None:
    """Send a delivery's failed conversions again; Conflict when it has none."""
    if not _queue_again(delivery):
        raise Conflict(
            f"delivery {delivery.id} is {delivery.status}; only failed or partial ones can be "
            "retried"
        )
    audit(actor, "retry", "delivery", delivery.id, {})
    db.session.commit()


def retry_failed(
    actor: User | None, pixel: str | None = None, since: datetime | None = None
) -> list[int]:
    """Queue every failed or partial delivery matching the filters again."""
    query = deliveries(pixel=pixel, since=since).where(Delivery.status.in_(RETRYABLE))
    retried = [row.id for row in db.session.scalars(query).all() if _queue_again(row)]
    filters = {"pixel": pixel or None, "since": iso(since)}
    audit(
        actor,
        "retry",
        "delivery",
        ",".join(map(str, retried))[:64],
        {"count": len(retried), **filters},
    )
    db.session.commit()
    return retried
