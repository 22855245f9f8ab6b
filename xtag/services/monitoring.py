"""What the dashboard, /readyz, /metrics and `xtag status` show: the queues
(Redis), what waits and the last 24 hours (the database), readiness, and the
Prometheus text of one scrape."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import redis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, literal_column, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from xtag.extensions import db
from xtag.models import (
    Connection,
    Delivery,
    DeliveryItem,
    Mapping,
    Pixel,
    ReceivedEvent,
    Site,
    utcnow,
)
from xtag.pipeline import heartbeat, inbox, quality
from xtag.pipeline.queues import redis_client

HOURS = 24
FAILED = ("failed", "partial")
# a conversion's status as the dashboard groups it; any other is pending
ITEM_GROUPS = {"delivered": "delivered", "rejected": "failed", "failed": "failed"}


def queues(within: float = heartbeat.TTL, client: redis.Redis | None = None) -> dict | None:
    """Intake state from Redis, counting workers that reported within
    `within` seconds; None when Redis cannot be reached."""
    client = client or redis_client()
    try:
        backlog = inbox.backlog(client)  # every shard of the inbox
        memory = client.info("memory")
        alive = heartbeat.alive(client, within)
    except (redis.RedisError, OSError):
        return None
    return {
        "inbox_depth": backlog["depth"],
        "inbox_oldest_age_seconds": backlog["oldest_age_seconds"],
        "inbox_dead_entries": backlog["dead"],
        "inbox_dead_cap": inbox.DEAD_MAX,
        "workers_alive": len(alive),
        "redis_used_memory_bytes": memory.get("used_memory", 0),
        "redis_maxmemory_bytes": memory.get("maxmemory", 0),
    }


def waiting() -> dict:
    """Conversions recorded but not yet taken into a delivery."""
    count, first = db.session.execute(
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


def last_day(now: datetime | None = None) -> dict:
    """Events by hour and outcome, drops by reason, conversions by pixel and
    status, the latest failed deliveries and the unhealthy connections."""
    session = db.session
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
        .where(DeliveryItem.created_at > since, DeliveryItem.test.is_(False))
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


FIRST_RUN = ("connection", "site", "mapping", "first_event", "first_conversion")
QUALITY_DAYS = 7
QUALITY_PIXELS = 12  # the dashboard's panel; the API has every pixel


def _exists(query) -> bool:
    return db.session.scalar(select(query.exists())) or False


def first_run() -> dict[str, bool] | None:
    """The first-run checklist, ticked from real data; None once the install
    has delivered its first conversion (then the checklist is done with)."""
    delivered = _exists(
        select(DeliveryItem.id).where(
            DeliveryItem.status == "delivered", DeliveryItem.test.is_(False)
        )
    )
    if delivered:
        return None
    return {
        "connection": _exists(select(Connection.id)),
        "site": _exists(select(Site.id)),
        "mapping": _exists(select(Mapping.id)),
        # an event from a page or server (a test event from the admin is not a snippet)
        "first_event": _exists(select(ReceivedEvent.id).where(ReceivedEvent.test.is_(False))),
        "first_conversion": False,
    }


def match_quality() -> list[dict]:
    """Each pixel's last week of match quality, for the dashboard's panel."""
    panel = []
    pixels = db.session.scalars(select(Pixel).order_by(Pixel.id).limit(QUALITY_PIXELS)).all()
    for pixel in pixels:
        days = quality.daily(pixel, QUALITY_DAYS)
        window = quality.total(days)
        panel.append(
            {
                "pixel_id": pixel.pixel_id,
                "name": pixel.name,
                "window": window.as_json(),
                "days": [day.as_json() for day in days],
                "advice": quality.advice(window),
            }
        )
    return panel


def readiness(within: float) -> tuple[bool, dict]:
    """Whether this deployment can take and deliver events: the database and
    Redis answer, and a worker reported within `within` seconds."""
    checks: dict[str, dict] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except SQLAlchemyError as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    finally:
        db.session.remove()
    state = queues(within)
    if state is None:
        checks["redis"] = {"ok": False, "error": "unreachable"}
        checks["workers"] = {"ok": False, "alive": None}
    else:
        checks["redis"] = {"ok": True, "inbox_depth": state["inbox_depth"]}
        checks["workers"] = {"ok": bool(state["workers_alive"]), "alive": state["workers_alive"]}
        near_cap = state["inbox_dead_entries"] >= inbox.DEAD_MAX * 0.9
        checks["dead_letters"] = {"ok": not near_cap, "entries": state["inbox_dead_entries"]}
    return all(check["ok"] for check in checks.values()), checks


GAUGES = {
    "inbox_depth": "Accepted requests not yet recorded.",
    "inbox_oldest_age_seconds": "Age of the oldest unrecorded request.",
    "inbox_dead_entries": "Requests set aside because they could not be recorded.",
    "inbox_dead_cap": "Entries set aside before the worker stops reading new ones.",
    "workers_alive": "Workers that reported within XTAG_READY_WORKER_SECONDS.",
    "redis_used_memory_bytes": "Memory Redis uses (alert well before its maxmemory).",
    "redis_maxmemory_bytes": "Redis's maxmemory (0: none set).",
    "conversions_waiting": "Conversions not yet taken into a delivery.",
    "conversions_waiting_oldest_age_seconds": "Age of the oldest waiting conversion.",
}


class _Waiting:
    """What is waiting, read at scrape time by the process that answers."""

    def __init__(self, within: float):
        self.within = within

    def collect(self):
        values = dict(queues(self.within) or {})
        try:
            values.update(waiting())
        except SQLAlchemyError:
            pass
        finally:
            db.session.remove()
        for name, value in values.items():
            yield GaugeMetricFamily(f"xtag_{name}", GAUGES[name], value=value)


def exposition(within: float) -> bytes:
    """The text format for one scrape: every process's counters, and the queues."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
        counted = generate_latest(processes)
    else:
        counted = generate_latest(REGISTRY)
    now = CollectorRegistry(auto_describe=False)
    now.register(_Waiting(within))
    return counted + generate_latest(now)
