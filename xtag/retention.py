"""What xtag keeps, and for how long: declared here once, applied by every
worker on a schedule (and by `flask xtag purge`), shown on the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import Text, cast, delete, update

from xtag.extensions import db
from xtag.models import AuditEntry, DeliveryAttempt, DeliveryItem, ReceivedEvent, utcnow


@dataclass(frozen=True)
class Policy:
    name: str
    setting: str  # the environment variable / config key holding the days
    default_days: int
    what: str  # as the dashboard says it


POLICIES = (
    Policy(
        "events",
        "XTAG_EVENT_RETENTION_DAYS",
        30,
        "Received events (the event debugger): the message with hashed identifiers",
    ),
    Policy(
        "delivery_bodies",
        "XTAG_DELIVERY_BODY_RETENTION_DAYS",
        14,
        "Request and response bodies of deliveries, and the conversions X accepted or "
        "rejected (failed ones stay for a retry by hand); the log of attempts stays",
    ),
    Policy("audit", "XTAG_AUDIT_RETENTION_DAYS", 365, "Audit log entries"),
)


def periods() -> list[tuple[Policy, int]]:
    return [(policy, current_app.config[policy.setting]) for policy in POLICIES]


def _events(cutoff) -> int:
    return db.session.execute(
        delete(ReceivedEvent).where(ReceivedEvent.received_at < cutoff)
    ).rowcount


def _delivery_bodies(cutoff) -> int:
    attempts = db.session.execute(
        update(DeliveryAttempt)
        .where(DeliveryAttempt.created_at < cutoff, DeliveryAttempt.request_body.is_not(None))
        .values(request_body=None, response_body=None)
    ).rowcount
    items = db.session.execute(
        update(DeliveryItem)
        .where(
            DeliveryItem.created_at < cutoff,
            DeliveryItem.status.in_(("delivered", "rejected")),
            cast(DeliveryItem.conversion, Text) != "{}",
        )
        .values(conversion={})
    ).rowcount
    return attempts + items


def _audit(cutoff) -> int:
    return db.session.execute(delete(AuditEntry).where(AuditEntry.created_at < cutoff)).rowcount


PURGES = {"events": _events, "delivery_bodies": _delivery_bodies, "audit": _audit}


def purge() -> dict[str, int]:
    """Apply every policy; returns how many rows each deleted or emptied."""
    done = {}
    for policy, days in periods():
        done[policy.name] = PURGES[policy.name](utcnow() - timedelta(days=days))
        db.session.commit()
    return done
