"""What the dashboard and /metrics show: queue state, and the last 24 hours
counted in the database. Plain dicts out; no Flask."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import redis
from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import Session

from xtag import inbox, worker
from xtag.models import Connection, Delivery, DeliveryItem, Pixel, ReceivedEvent, utcnow

HOURS = 24
FAILED = ("failed", "partial")
# a conversion's status as the dashboard groups it; any other is pending
ITEM_GROUPS = {"delivered": "delivered", "rejected": "failed", "failed": "failed"}


def queues(client: redis.Redis, within: float = worker.HEARTBEAT_TTL) -> dict | None:
    """Intake state from Redis, counting workers that reported within
    `within` seconds; None when Redis cannot be reached."""
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.xlen(inbox.STREAM)
            pipe.xrange(inbox.STREAM, count=1)
            pipe.xlen(inbox.DEAD)
            depth, oldest, dead = pipe.execute()
        alive = worker.alive(client, within)
    except (redis.RedisError, OSError):
        return None
    age = time.time() - int(oldest[0][0].split(b"-")[0]) / 1000 if oldest else 0.0
    return {
        "inbox_depth": depth,
        "inbox_oldest_age_seconds": max(age, 0.0),
        "inbox_dead_entries": dead,
        "workers_alive": len(alive),
    }


def waiting(session: Session) -> dict:
    """Conversions recorded but not yet taken into a delivery."""
    count, first = session.execute(
        select(func.count(DeliveryItem.id), func.min(DeliveryItem.created_at)).where(
            DeliveryItem.status == "waiting"
        )
    ).one()
    age = (utcnow() - first).total_seconds() if first else 0.0
    return {"conversions_waiting": count, "conversions_waiting_oldest_age_seconds": max(age, 0.0)}


def _hour(session: Session, column):
    """The UTC hour of a timestamp as 'YYYY-MM-DD HH:00', in SQL."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), literal_column("'YYYY-MM-DD HH24:00'"))
    return func.strftime("%Y-%m-%d %H:00", column)


def last_day(session: Session, now: datetime | None = None) -> dict:
    """Events by hour and outcome, drops by reason, conversions by pixel and
    status, the latest failed deliveries and the unhealthy connections."""
    now = now or utcnow()
    since = now - timedelta(hours=HOURS)
    hours = [(since + timedelta(hours=i + 1)).strftime("%Y-%m-%d %H:00") for i in range(HOURS)]
    series = {name: [0] * HOURS for name in ("received", "forwarded", "dropped")}
    hour = _hour(session, ReceivedEvent.received_at)
    rows = session.execute(
        select(hour, ReceivedEvent.outcome, func.count())
        .where(ReceivedEvent.received_at > since)
        .group_by(hour, ReceivedEvent.outcome)
    )
    for bucket, outcome, count in rows:
        if bucket in hours:
            i = hours.index(bucket)
            series["received"][i] += count
            if outcome == "forwarded":
                series["forwarded"][i] += count
            elif outcome in ("dropped", "unmapped"):
                series["dropped"][i] += count
    reason = func.coalesce(ReceivedEvent.reason, ReceivedEvent.outcome)
    drops = session.execute(
        select(reason, func.count())
        .where(
            ReceivedEvent.received_at > since,
            ReceivedEvent.outcome.in_(("dropped", "unmapped")),
        )
        .group_by(reason)
        .order_by(func.count().desc())
    ).all()
    conversions: dict[str, dict[str, int]] = {}
    for pixel_id, status, count in session.execute(
        select(Pixel.pixel_id, DeliveryItem.status, func.count())
        .join(Pixel, Pixel.id == DeliveryItem.pixel_key)
        .where(DeliveryItem.created_at > since)
        .group_by(Pixel.pixel_id, DeliveryItem.status)
    ):
        row = conversions.setdefault(pixel_id, {"delivered": 0, "failed": 0, "pending": 0})
        row[ITEM_GROUPS.get(status, "pending")] += count
    failures = session.scalars(
        select(Delivery).where(Delivery.status.in_(FAILED)).order_by(Delivery.id.desc()).limit(10)
    ).all()
    unhealthy = session.scalars(
        select(Connection).where(Connection.status == "unhealthy").order_by(Connection.name)
    ).all()
    return {
        "hours": [h[11:] for h in hours],
        "events": series,
        "drops": [{"reason": r, "count": c} for r, c in drops],
        "conversions": [{"pixel_id": p, **counts} for p, counts in sorted(conversions.items())],
        "failures": failures,
        "unhealthy": unhealthy,
    }
