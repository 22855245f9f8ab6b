"""A connection's credentials as the sender needs them: OAuth 2.0 access
tokens refreshed in time without ever losing a rotated refresh token, and
the connection's health as X's answers show it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from flask import current_app

from xtag.core.checks import expires_at
from xtag.extensions import db
from xtag.models import Connection
from xtag.pipeline import queues
from xtag.x_api import oauth

log = logging.getLogger(__name__)

REFRESH_AHEAD = timedelta(minutes=5)
LOCK_SECONDS = 30


def _needs_refresh(credentials: dict) -> bool:
    expires = expires_at(credentials)
    return expires is not None and expires - datetime.now(UTC) < REFRESH_AHEAD


def oauth2_credentials(connection_id: int, rejected_token: str | None = None) -> dict:
    """Credentials with an access token good for a while.

    Refreshes when the token is about to expire, or when X just refused
    `rejected_token`. Under a Redis lock, and re-reading the row inside it, so
    two workers never spend the same refresh token: the second finds the
    token the first stored. The rotated tokens are committed at once.
    Raises oauth.RefreshFailed when X refuses.
    """
    connection = db.session.get(Connection, connection_id)
    credentials = connection.credentials
    if not _needs_refresh(credentials) and credentials["access_token"] != rejected_token:
        return credentials
    lock = queues.redis_client().lock(
        f"xtag:lock:oauth2:{connection_id}", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS
    )
    with lock:
        db.session.refresh(connection)
        credentials = connection.credentials
        stale = credentials["access_token"] == rejected_token
        if not stale and not _needs_refresh(credentials):
            return credentials  # another worker refreshed while we waited
        credentials = oauth.refresh(current_app.config, credentials)
        connection.credentials = credentials
        connection.token_expires_at = expires_at(credentials)
        db.session.commit()
        log.info("connection %s: OAuth 2.0 token refreshed", connection_id)
        return credentials


def mark(connection: Connection, healthy: bool, error: str | None = None) -> None:
    """Record health only when it changes, so success costs no write."""
    status = "healthy" if healthy else "unhealthy"
    if connection.status != status or connection.last_error != error:
        connection.status = status
        connection.last_error = error
