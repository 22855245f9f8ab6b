"""What marketers and admins configure: sites, connections to X (their
credentials encrypted), pixels, mappings, and install-wide settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from xtag.core import crypto
from xtag.extensions import db
from xtag.models.base import UTCDateTime, new_write_key, utcnow


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


class Setting(db.Model):
    """An install-wide setting set in the admin; secrets encrypted like credentials."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value_encrypted: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
