"""Connections to X: credentials in memory only when needed, OAuth 2.0
refresh that never loses a rotated refresh token, and health."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from flask import current_app

from xtag import queue
from xtag.extensions import db
from xtag.models import Connection

log = logging.getLogger(__name__)

REFRESH_AHEAD = timedelta(minutes=5)
LOCK_SECONDS = 30
TOKEN_TIMEOUT = (5, 20)


class RefreshFailed(RuntimeError):
    """X refused to renew an OAuth 2.0 token; the connection needs reconnecting."""


def expires_at(credentials: dict) -> datetime | None:
    value = credentials.get("expires_at")
    if value in (None, ""):
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError):
        return None


def _needs_refresh(credentials: dict) -> bool:
    expires = expires_at(credentials)
    return expires is not None and expires - datetime.now(UTC) < REFRESH_AHEAD


def _refresh(connection: Connection, credentials: dict) -> dict:
    session = OAuth2Session(
        client_id=credentials["client_id"],
        client_secret=credentials.get("client_secret") or None,
        token_endpoint_auth_method="client_secret_basic"
        if credentials.get("client_secret")
        else "none",
    )
    try:
        token = session.refresh_token(
            current_app.config["XTAG_X_OAUTH2_TOKEN_URL"],
            refresh_token=credentials["refresh_token"],
            timeout=TOKEN_TIMEOUT,
        )
    except (OAuthError, ValueError, OSError) as exc:
        raise RefreshFailed(f"X refused to refresh the OAuth 2.0 token: {exc}") from None
    finally:
        session.close()
    renewed = dict(credentials)
    renewed["access_token"] = token["access_token"]
    renewed["refresh_token"] = token.get("refresh_token") or credentials["refresh_token"]
    if token.get("expires_at"):
        renewed["expires_at"] = int(token["expires_at"])
    elif token.get("expires_in"):
        renewed["expires_at"] = int(time.time() + int(token["expires_in"]))
    return renewed


def oauth2_credentials(connection_id: int, rejected_token: str | None = None) -> dict:
    """Credentials with an access token good for a while.

    Refreshes when the token is about to expire, or when X just refused
    `rejected_token`. Under a Redis lock, and re-reading the row inside it, so
    two workers never spend the same refresh token: the second finds the
    token the first stored. The rotated tokens are committed at once.
    """
    connection = db.session.get(Connection, connection_id)
    credentials = connection.credentials
    if not _needs_refresh(credentials) and credentials["access_token"] != rejected_token:
        return credentials
    lock = queue.redis_client().lock(
        f"xtag:lock:oauth2:{connection_id}", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS
    )
    with lock:
        db.session.refresh(connection)
        credentials = connection.credentials
        stale = credentials["access_token"] == rejected_token
        if not stale and not _needs_refresh(credentials):
            return credentials  # another worker refreshed while we waited
        credentials = _refresh(connection, credentials)
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
