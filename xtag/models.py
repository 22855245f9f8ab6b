"""Typed SQLAlchemy 2 models."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from xtag.core import crypto
from xtag.extensions import db

BigId = BigInteger().with_variant(Integer(), "sqlite")
ROLES = ("admin", "marketer")
AUTH_TYPES = ("oauth1", "pixel_token", "oauth2")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(db.TypeDecorator):
    """Timezone-aware UTC datetimes on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def new_write_key() -> str:
    return secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="marketer")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # a session is valid while it carries this version: logout, a new password,
    # deactivation and a role change raise it, ending every session of the user
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class ApiToken(db.Model):
    """A management-API bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="tokens")

    @classmethod
    def issue(cls, user: User, name: str = "") -> tuple[ApiToken, str]:
        """A new token row and the token itself, which is shown once."""
        token = "xtag_" + secrets.token_urlsafe(32)
        return cls(user=user, name=name, prefix=token[:12], token_hash=token_hash(token)), token

    @classmethod
    def find(cls, token: str) -> ApiToken | None:
        row = db.session.scalar(select(cls).where(cls.token_hash == token_hash(token)))
        if row is None or row.revoked_at is not None or not row.user.active:
            return None
        return row


class Site(db.Model):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    write_key: Mapped[str] = mapped_column(String(64), unique=True, default=new_write_key)
    # after a rotation, the old key is still accepted until previous_write_key_until
    previous_write_key: Mapped[str | None] = mapped_column(String(64), index=True)
    previous_write_key_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    default_phone_region: Mapped[str | None] = mapped_column(String(2))
    require_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    # events per second the collector accepts for this site; None: XTAG_SITE_RATE_LIMIT
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    # conversions are recorded as deliveries with status 'test', never sent to X
    test_mode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # the site's own X pixel: the beacon fires it with the server's conversion ids
    x_pixel_id: Mapped[str | None] = mapped_column(String(32))
    # alert when no event arrives for this long; None: off
    silence_alert_hours: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    mappings: Mapped[list[Mapping]] = relationship(
        back_populates="site", cascade="all, delete-orphan"
    )


class Connection(db.Model):
    """Credentials for X, encrypted at rest; decrypted only in memory when needed."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    auth_type: Mapped[str] = mapped_column(String(16))
    credentials_encrypted: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    last_error: Mapped[str | None] = mapped_column(Text)
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    pixels: Mapped[list[Pixel]] = relationship(back_populates="connection")

    @property
    def credentials(self) -> dict[str, Any]:
        return crypto.decrypt_json(
            current_app.config["XTAG_ENCRYPTION_KEYS"], self.credentials_encrypted
        )

    @credentials.setter
    def credentials(self, value: dict[str, Any]) -> None:
        self.credentials_encrypted = crypto.encrypt_json(
            current_app.config["XTAG_ENCRYPTION_KEYS"], value
        )

    def reencrypt(self) -> None:
        """Re-encrypt with the first configured key (key rotation)."""
        self.credentials_encrypted = crypto.rotate(
            current_app.config["XTAG_ENCRYPTION_KEYS"], self.credentials_encrypted
        )


class Pixel(db.Model):
    __tablename__ = "pixels"

    id: Mapped[int] = mapped_column(primary_key=True)
    pixel_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    connection: Mapped[Connection | None] = relationship(back_populates="pixels")


class Mapping(db.Model):
    """Incoming event name on a site -> one X pixel + X event id."""

    __tablename__ = "mappings"
    __table_args__ = (
        UniqueConstraint(
            "site_id", "event_name", "pixel_key", "x_event_id", name="uq_mappings_rule"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    event_name: Mapped[str] = mapped_column(String(200))
    pixel_key: Mapped[int] = mapped_column(ForeignKey("pixels.id", ondelete="CASCADE"))
    x_event_id: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(String(500))
    fields: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    site: Mapped[Site] = relationship(back_populates="mappings")
    pixel: Mapped[Pixel] = relationship()


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


class AuditEntry(db.Model):
    """Who changed which configuration, when, and which fields (secrets as 'changed')."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(16))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Replay(db.Model):
    """Received events of a window run again through today's mappings."""

    __tablename__ = "replays"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    event_name: Mapped[str | None] = mapped_column(String(200))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # running, done, failed
    events: Mapped[int] = mapped_column(Integer, default=0)  # read so far
    total: Mapped[int | None] = mapped_column(Integer)  # events in the window
    conversions: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # per X pixel id
    skipped: Mapped[int] = mapped_column(Integer, default=0)  # already delivered or queued
    older_than_48h: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def warning(self) -> str | None:
        if not self.older_than_48h:
            return None
        return (
            f"{self.older_than_48h} of these conversions happened more than 48 hours ago: "
            "X cannot count them once with its browser pixel, and may not attribute them"
        )


class Alert(db.Model):
    """A condition that started (and maybe ended), and whether the webhook heard of it."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_open", "ended_at", "kind", "subject"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Setting(db.Model):
    """An install-wide setting set in the admin; secrets encrypted like credentials."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value_encrypted: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
