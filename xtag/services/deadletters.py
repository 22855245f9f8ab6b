"""Inbox entries the worker could not record, set aside rather than lost:
listed for an admin with their reason, and requeued once the cause is fixed
(audited)."""

from __future__ import annotations

from xtag.extensions import db
from xtag.models import User
from xtag.pipeline import inbox
from xtag.pipeline.queues import redis_client
from xtag.services.changes import audit

SHOWN = 100


def listing() -> list[dict]:
    return inbox.dead(redis_client(), SHOWN)


def requeue(actor: User | None, entry_ids: list[str]) -> int:
    """Put these entries back in the inbox; how many were found."""
    moved = inbox.requeue(redis_client(), entry_ids)
    audit(actor, "requeue", "dead_letter", ",".join(entry_ids)[:64], {"count": moved})
    db.session.commit()
    return moved
