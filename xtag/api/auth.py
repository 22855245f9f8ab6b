"""Bearer tokens and roles for the management API, and the one table that
turns a domain error into the API's HTTP answer."""

from __future__ import annotations

from functools import wraps

from flask import current_app, g, jsonify, request

from xtag.core.errors import (
    BadReference,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Unauthenticated,
)
from xtag.models import User
from xtag.services import tokens

STATUS = {
    BadReference: 422,
    Conflict: 409,
    NotFound: 404,
    Unauthenticated: 401,
    Forbidden: 403,
    RateLimited: 429,
}


def error_answer(error: Invalid):
    """{"error": {"code", "message", "field"?}} with the status of its kind."""
    body = {"code": error.code, "message": error.message}
    if error.field:
        body["field"] = error.field
    response = jsonify(error=body)
    response.status_code = STATUS.get(type(error), 400)
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def current_user() -> User:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send a token as Authorization: Bearer <token>")
    per_minute = current_app.config["XTAG_API_RATE_LIMIT"]  # 0: no limits
    return tokens.authenticate(token.strip(), request.remote_addr, per_minute)


def requires(role: str = "marketer"):
    """Any authenticated user for 'marketer'; admins only for 'admin'."""

    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            g.api_user = current_user()
            if role == "admin" and not g.api_user.is_admin:
                raise Forbidden("only admins may do this")
            return view(*args, **kwargs)

        return wrapped

    return decorate
