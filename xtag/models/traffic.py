"""What flows through xtag: events received, and the conversions, batches
and attempts that carry them to X."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from xtag.extensions import db
from xtag.models.base import BigId, UTCDateTime, utcnow

if TYPE_CHECKING:
    from xtag.models.configuration import Pixel


class ReceivedEvent(db.Model):
    """One message the collector accepted, with what became of it.

    Holds hashed identifiers only; purged after XTAG_EVENT_RETENTION_DAYS.
    """

    __tablename__ = "received_events"
    __table_args__ = (Index("ix_received_events_site_received", "site_id", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    message_id: Mapped[str | None] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(16))
    event_name: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    pixels: Mapped[list[str]] = mapped_column(JSON, default=list)
    identifiers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # where each identifier came from: message, cookie, request or (visitor) memory
    sources: Mapped[dict[str, str] | None] = mapped_column(JSON)
    message: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # recorded in test mode (the site's, or a test event): its conversions never reach X
    test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    # What the event debugger shows of the message (scrubbed when it was received)
    @property
    def anonymous_id(self) -> str | None:
        return self.message.get("anonymousId")

    @property
    def user_id(self) -> str | None:
        return self.message.get("userId")

    @property
    def page_name(self) -> str | None:
        """A page's or screen's own name ('Checkout')."""
        return self.message.get("name")

    @property
    def event_time(self) -> str | None:
        return self.message.get("timestamp")

    @property
    def context(self) -> dict[str, Any]:
        context = self.message.get("context")
        return context if isinstance(context, dict) else {}

    @property
    def page_url(self) -> str | None:
        page = self.context.get("page")
        url = page.get("url") if isinstance(page, dict) else None
        return url if isinstance(url, str) else None

    @property
    def library(self) -> dict[str, Any] | None:
        library = self.context.get("library")
        return library if isinstance(library, dict) else None

    @property
    def properties(self) -> dict[str, Any]:
        return self.message.get("properties") or {}


class Delivery(db.Model):
    """One batch of conversions for one pixel, and its fate at X."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pixel_key: Mapped[int] = mapped_column(ForeignKey("pixels.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(16), default="sending", index=True)
    conversions: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    debug_id: Mapped[str | None] = mapped_column(String(100))
    processed: Mapped[int | None] = mapped_column(Integer)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    pixel: Mapped[Pixel] = relationship()
    items: Mapped[list[DeliveryItem]] = relationship(
        back_populates="delivery", cascade="all, delete-orphan"
    )
    attempt_log: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="delivery", cascade="all, delete-orphan", order_by="DeliveryAttempt.number"
    )


class DeliveryAttempt(db.Model):
    """One HTTP request to X; the body holds hashed identifiers only."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    conversions: Mapped[int] = mapped_column(Integer)
    request_body: Mapped[str | None] = mapped_column(Text)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    debug_id: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    delivery: Mapped[Delivery] = relationship(back_populates="attempt_log")


class DeliveryItem(db.Model):
    """One conversion: waiting for a batch (no delivery yet), then inside one,
    tied back to the event it came from."""

    __tablename__ = "delivery_items"
    __table_args__ = (
        Index("ix_delivery_items_waiting", "pixel_key", "delivery_id", "id"),
        Index("ix_delivery_items_pixel_created", "pixel_key", "created_at"),
        Index("ix_delivery_items_pixel_conversion", "pixel_key", "conversion_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pixel_key: Mapped[int] = mapped_column(ForeignKey("pixels.id", ondelete="CASCADE"))
    delivery_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("received_events.id", ondelete="SET NULL")
    )
    conversion_id: Mapped[str | None] = mapped_column(String(500))  # mapping.TEXT_MAX
    conversion: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # while waiting: what completes its identifiers at claim time (the event's
    # hashed identifiers, its visitor's memory keys); null when nothing can
    visitor: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    error: Mapped[str | None] = mapped_column(Text)
    # a test conversion (never sent; batched apart from live ones)
    test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # what X can match it on: core.mapping.match_of bits (twclid, email, phone); 0 weak
    match: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    delivery: Mapped[Delivery | None] = relationship(back_populates="items")
