"""What xtag keeps, and for how long: declared here once, applied by every
worker on a schedule (and by `flask xtag purge`), shown on the dashboard."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import Text, cast, delete, update

from xtag.extensions import db
from xtag.models import Alert, AuditEntry, DeliveryAttempt, DeliveryItem, ReceivedEvent, utcnow


@dataclass(frozen=True)
class Policy:
    name: str
    setting: str  # the environment variable / config key holding the days
    default_days: int
    what: str  # as the dashboard says it
    purge: Callable[[datetime], int]  # rows older than the cutoff: how many it deleted or emptied


def _events(cutoff: datetime) -> int:
    return db.session.execute(
        delete(ReceivedEvent).where(ReceivedEvent.received_at < cutoff)
    ).rowcount


def _delivery_bodies(cutoff: datetime) -> int:
    attempts = db.session.execute(
        update(DeliveryAttempt)
        .where(DeliveryAttempt.created_at < cutoff, DeliveryAttempt.request_body.is_not(None))
        .values(request_body=None, response_body=None)
    ).rowcount
    items = db.session.execute(
        update(DeliveryItem)
        .where(
            DeliveryItem.created_at < cutoff,
            DeliveryItem.status.in_(("delivered", "rejected", "test")),
            cast(DeliveryItem.conversion, Text) != "{}",
        )
        .values(conversion={})
    ).rowcount
    return attempts + items


def _audit(cutoff: datetime) -> int:
    entries = db.session.execute(delete(AuditEntry).where(AuditEntry.created_at < cutoff))
    alerts = db.session.execute(delete(Alert).where(Alert.ended_at < cutoff))
    return entries.rowcount + alerts.rowcount


POLICIES = (
    Policy(
        "events",
        "XTAG_EVENT_RETENTION_DAYS",
        30,
        "Received events (the event debugger): the message with hashed identifiers",
        _events,
    ),
    Policy(
        "delivery_bodies",
        "XTAG_DELIVERY_BODY_RETENTION_DAYS",
        14,
        "Request and response bodies of deliveries, and the conversions X accepted or "
        "rejected and test ones (failed ones stay for a retry by hand); the log of "
        "attempts stays",
        _delivery_bodies,
    ),
    Policy(
        "audit",
        "XTAG_AUDIT_RETENTION_DAYS",
        365,
        "Audit log entries, and alerts that ended",
        _audit,
    ),
)


def periods() -> list[tuple[Policy, int]]:
    return [(policy, current_app.config[policy.setting]) for policy in POLICIES]


def purge() -> dict[str, int]:
    """Apply every policy; returns how many rows each deleted or emptied."""
    done = {}
    for policy, days in periods():
        done[policy.name] = policy.purge(utcnow() - timedelta(days=days))
        db.session.commit()
    return done
