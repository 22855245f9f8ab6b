"""Bearer tokens and roles for the management API."""

from __future__ import annotations

from datetime import timedelta
from functools import wraps

from flask import g, request

from xtag.extensions import db
from xtag.models import ApiToken, User, utcnow
from xtag.schema import Invalid

LAST_USED_RESOLUTION = timedelta(minutes=1)


def current_user() -> User:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Invalid("send a token as Authorization: Bearer <token>", None, 401, "unauthorized")
    row = ApiToken.find(token.strip())
    if row is None:
        raise Invalid(
            "this token is unknown, revoked, or its user inactive", None, 401, "unauthorized"
        )
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
        db.session.commit()
    return row.user


def requires(role: str = "marketer"):
    """Any authenticated user for 'marketer'; admins only for 'admin'."""

    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            g.api_user = current_user()
            if role == "admin" and not g.api_user.is_admin:
                raise Invalid("only admins may do this", None, 403, "forbidden")
            return view(*args, **kwargs)

        return wrapped

    return decorate
