"""Read queries the admin and the management API share (the delivery log, the
event debugger, the audit log), one paging helper, and how each row is shown."""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import Select, func, select

from xtag.core.fields import Field, Schema
from xtag.extensions import db
from xtag.models import AuditEntry, Delivery, Pixel, ReceivedEvent, User

ATTEMPT = Schema(
    "DeliveryAttempt",
    tuple(
        Field(name, kind)
        for name, kind in (
            ("number", "integer"),
            ("conversions", "integer"),
            ("status_code", "integer"),
            ("request_body", "string"),
            ("response_body", "string"),
            ("debug_id", "string"),
            ("error", "string"),
            ("duration_ms", "integer"),
            ("next_retry_at", "string"),
            ("created_at", "string"),
        )
    ),
    has_id=False,
)
ITEM = Schema(
    "DeliveryItem",
    (
        Field("event_id", "integer"),
        Field("conversion_id", "string"),
        Field("status", "string"),
        Field("error", "string"),
    ),
    has_id=False,
)
DELIVERY = Schema(
    "Delivery",
    (
        Field("pixel", "integer", source="pixel_key"),
        Field("pixel_id", "string", source="pixel.pixel_id"),
        Field("connection_id", "integer"),
        Field("status", "string"),
        Field("conversions", "integer"),
        Field("attempts", "integer"),
        Field("retries", "integer"),
        Field("debug_id", "string"),
        Field("last_status_code", "integer"),
        Field("last_error", "string"),
        Field("next_retry_at", "string"),
        Field("created_at", "string"),
        Field("attempt_log", "array", nested=ATTEMPT, detail=True),
        Field("items", "array", nested=ITEM, detail=True),
    ),
)
EVENT = Schema(
    "Event",
    (
        Field("site_id", "integer"),
        Field("message_id", "string"),
        Field("type", "string"),
        Field("event_name", "string"),
        Field("received_at", "string"),
        Field("outcome", "string"),
        Field("reason", "string"),
        Field("pixels", "array"),
        Field("identifiers", "object"),
        Field("sources", "object"),
        Field("name", "string", source="page_name"),
        Field("anonymous_id", "string"),
        Field("user_id", "string"),
        Field("event_time", "string"),
        Field("page_url", "string"),
        Field("library", "object"),
        Field("properties", "object"),
        Field("test", "boolean"),
    ),
)
AUDIT = Schema(
    "AuditEntry",
    (
        Field("user_id", "integer"),
        Field("action", "string"),
        Field("object_type", "string"),
        Field("object_id", "string"),
        Field("changes", "object"),
        Field("created_at", "string"),
    ),
)
SYSTEM = "system"  # the audit log's name for changes no user made (the CLI, the worker)


class Page(NamedTuple):
    rows: list[Any]
    total: int | None


def page(query: Select, order: Any, limit: int, offset: int = 0, count: bool = True) -> Page:
    """One page of a listing, newest or first as `order` says; with the total
    when `count` (a second query)."""
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) if count else None
    rows = db.session.execute(query.order_by(order).limit(limit).offset(offset))
    single = len(query.column_descriptions) == 1
    return Page([row[0] if single else row for row in rows], total)


def deliveries(status: str | None = None, pixel: str | None = None, since: Any = None) -> Select:
    """Deliveries by status, X pixel id and creation time (the log's filters)."""
    query = select(Delivery)
    if status:
        query = query.where(Delivery.status == status)
    if pixel:
        query = query.join(Pixel, Delivery.pixel_key == Pixel.id).where(
            Pixel.pixel_id == pixel.strip().lower()
        )
    if since is not None:
        query = query.where(Delivery.created_at >= since)
    return query


def events(
    site_id: int | None = None, event_name: str | None = None, outcome: str | None = None
) -> Select:
    """Received events by site, event name and outcome (the debugger's filters)."""
    query = select(ReceivedEvent)
    for column, value in (
        (ReceivedEvent.site_id, site_id),
        (ReceivedEvent.event_name, event_name),
        (ReceivedEvent.outcome, outcome),
    ):
        if value is not None:
            query = query.where(column == value)
    return query


def audit_entries(kind: str | None = None, actor: int | str | None = None) -> Select:
    """Audit entries with their actor's email, by object type and by actor
    (a user id, or SYSTEM for changes no user made)."""
    query = select(AuditEntry, User.email).outerjoin(User, AuditEntry.user_id == User.id)
    if kind:
        query = query.where(AuditEntry.object_type == kind)
    if actor == SYSTEM:
        query = query.where(AuditEntry.user_id.is_(None))
    elif actor is not None:
        query = query.where(AuditEntry.user_id == actor)
    return query
