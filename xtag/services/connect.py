"""Connecting an X account from the admin: the flow in progress, and the
connection it makes.

The flow (request token secret, PKCE verifier, state, the app's secrets
typed in) waits server-side in Redis, Fernet-encrypted, for ten minutes;
the caller keeps only its random id (in the signed, readable session).
Taking a flow removes it, so it completes once, for the user who started it.
The connection is made like any other (validated and audited)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from flask import current_app

from xtag.core import crypto
from xtag.core.errors import Invalid
from xtag.models import Connection, User
from xtag.pipeline.queues import redis_client
from xtag.services import changes
from xtag.services.resources import CONNECTIONS
from xtag.x_api import oauth

FLOW_SECONDS = 600
FLOW_KEY = "xtag:connect:{}"
KINDS = ("oauth1", "oauth2")


class FlowError(Exception):
    """Why connecting failed, worded for the admin."""


def _keys() -> list[str]:
    return current_app.config["XTAG_ENCRYPTION_KEYS"]


def _save(flow: dict, user: User, previous: str | None) -> str:
    """Encrypt the flow into Redis under a new random id, dropping the
    user's previous unfinished one; returns the id."""
    client = redis_client()
    if previous:
        client.delete(FLOW_KEY.format(previous))
    flow_id = secrets.token_urlsafe(32)
    sealed = crypto.encrypt_json(_keys(), {**flow, "user_id": user.id})
    client.set(FLOW_KEY.format(flow_id), sealed, ex=FLOW_SECONDS)
    return flow_id


def start(kind: str, user: User, form: Mapping[str, str], callback_url: str, previous=None):
    """Begin connecting: (X's page to send the admin to, the flow's id).
    `form` holds name and the app's keys: consumer_key and consumer_secret
    (oauth1), or client_id and client_secret (oauth2)."""
    flow: dict[str, Any] = {"kind": kind, "name": form["name"].strip()}
    try:
        if kind == "oauth1":
            flow["consumer_key"] = form["consumer_key"].strip()
            flow["consumer_secret"] = form["consumer_secret"].strip()
            url = oauth.start_oauth1(current_app.config, flow, callback_url)
        else:
            flow["client_id"] = form["client_id"].strip()
            flow["client_secret"] = (form.get("client_secret") or "").strip()
            flow["redirect_uri"] = callback_url
            url = oauth.start_oauth2(current_app.config, flow)
    except oauth.HandshakeFailed as exc:
        raise FlowError(str(exc)) from None
    return url, _save(flow, user, previous)


def _take(flow_id: str | None, kind: str, user: User) -> dict:
    """The flow this browser started, removed so that it is used once."""
    if not flow_id:
        raise FlowError(
            "No connection to X was being made in this browser (or it was finished "
            "already): start again."
        )
    pipe = redis_client().pipeline()
    pipe.get(FLOW_KEY.format(flow_id))
    pipe.delete(FLOW_KEY.format(flow_id))
    sealed, _ = pipe.execute()
    try:
        flow = crypto.decrypt_json(_keys(), sealed.decode()) if sealed else None
    except crypto.CredentialError:
        flow = None
    if flow is None:
        raise FlowError(
            f"The connection to X expired (it must be finished within {FLOW_SECONDS // 60} "
            "minutes): start again."
        )
    if flow.get("user_id") != user.id:
        raise FlowError("This connection to X was started by another user: start again.")
    if flow.get("kind") != kind:
        raise FlowError("X answered a different connection than the one started: start again.")
    return flow


def finish(
    kind: str, user: User, flow_id: str | None, args: Mapping[str, str]
) -> tuple[Connection, str | None]:
    """X's callback -> the new connection and who X says it is (or None)."""
    flow = _take(flow_id, kind, user)
    finish_kind = oauth.finish_oauth1 if kind == "oauth1" else oauth.finish_oauth2
    try:
        made = finish_kind(current_app.config, flow, args)
    except oauth.HandshakeFailed as exc:
        raise FlowError(str(exc)) from None
    data = {"name": flow["name"], "auth_type": kind, "credentials": made["credentials"]}
    try:
        row = changes.create(CONNECTIONS, user, data)
    except Invalid as exc:
        raise FlowError(f"X agreed, but the connection was not saved: {exc.message}") from None
    return row, made["who"]
