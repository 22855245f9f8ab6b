"""What running xtag leaves behind: the audit log, replays and alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from xtag.extensions import db
from xtag.models.base import BigId, UTCDateTime, utcnow


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
