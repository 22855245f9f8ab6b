"""Bearer tokens and roles for the management API."""

from __future__ import annotations

from datetime import timedelta
from functools import wraps

import redis
from flask import current_app, g, request

from xtag import queue, ratelimit
from xtag.extensions import db
from xtag.models import ApiToken, User, utcnow
from xtag.schema import Invalid

LAST_USED_RESOLUTION = timedelta(minutes=1)
# Wrong tokens an address may present per minute before it must wait: a
# guessing flood costs one Redis round trip per request, not a database query.
BAD_TOKENS_PER_MINUTE = 30


def _wait(check, scope: str, limit: int) -> int:
    """`check` (ratelimit.hit counts, ratelimit.over only looks) for a limit per
    minute: seconds to wait, 0 when within it; limits fail open when Redis is
    down (the API itself does not need Redis)."""
    try:
        return check(queue.redis_client(), scope, limit, 60)
    except (redis.RedisError, OSError):
        return 0


def _too_many(message: str, wait: int) -> Invalid:
    return Invalid(message, None, 429, "too_many_requests", retry_after=wait)


def current_user() -> User:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Invalid("send a token as Authorization: Bearer <token>", None, 401, "unauthorized")
    per_minute = current_app.config["XTAG_API_RATE_LIMIT"]  # 0: no limits
    address = f"api-bad-token:{request.remote_addr}"
    wait = per_minute and _wait(ratelimit.over, address, BAD_TOKENS_PER_MINUTE)
    if wait:
        raise _too_many("too many requests with a wrong token from this address; wait", wait)
    row = ApiToken.find(token.strip())
    if row is None:
        if per_minute:
            _wait(ratelimit.hit, address, BAD_TOKENS_PER_MINUTE)
        raise Invalid(
            "this token is unknown, revoked, or its user inactive", None, 401, "unauthorized"
        )
    wait = per_minute and _wait(ratelimit.hit, f"api-token:{row.id}", per_minute)
    if wait:
        raise _too_many(f"this token may make {per_minute} requests a minute; wait", wait)
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
