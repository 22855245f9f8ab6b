"""Received events are kept for XTAG_EVENT_RETENTION_DAYS, then deleted."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import delete

from xtag.extensions import db
from xtag.models import ReceivedEvent, utcnow


def purge() -> int:
    """Delete received events past retention; returns how many went."""
    cutoff = utcnow() - timedelta(days=current_app.config["XTAG_EVENT_RETENTION_DAYS"])
    gone = db.session.execute(delete(ReceivedEvent).where(ReceivedEvent.received_at < cutoff))
    db.session.commit()
    return gone.rowcount
