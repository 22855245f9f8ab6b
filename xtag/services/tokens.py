"""Management-API tokens: issued (shown once, stored hashed), revoked, and
checked on every API request with its limits."""

from __future__ import annotations

from datetime import timedelta

from xtag.core.errors import Invalid, RateLimited, Unauthenticated
from xtag.extensions import db
from xtag.models import ApiToken, User, utcnow
from xtag.services import limits
from xtag.services.changes import audit

NAME_MAX = 100
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Wrong tokens an address may present per minute before it is answered 429;
# a valid token from the same address still works.
BAD_TOKENS_PER_MINUTE = 30


def issue(actor: User | None, user: User, name: str = "") -> tuple[ApiToken, str]:
    """A new management-API token for a user: the row (only its hash is stored)
    and the token itself, which the caller shows once."""
    name = (name or "").strip()
    if len(name) > NAME_MAX:
        raise Invalid(f"name is longer than {NAME_MAX} characters", "name")
    if "\x00" in name:
        raise Invalid("name may not contain NUL characters", "name")
    if not user.active:
        raise Invalid(f"{user.email} is deactivated: reactivate them first", "user_id")
    row, token = ApiToken.issue(user, name=name)
    db.session.add(row)
    db.session.flush()
    changes = {"user": user.email, "prefix": row.prefix}
    if name:
        changes["name"] = name
    audit(actor, "create", "api_token", row.id, changes)
    db.session.commit()
    return row, token


def revoke(actor: User | None, rows: list[ApiToken]) -> int:
    """Revoke tokens that are still live; how many were."""
    live = [row for row in rows if row.revoked_at is None]
    for row in live:
        row.revoked_at = utcnow()
        audit(actor, "revoke", "api_token", row.id, {"user": row.user.email})
    db.session.commit()
    return len(live)


def authenticate(token: str, address: str | None, per_minute: int) -> User:
    """The user a bearer token belongs to, within `per_minute` requests a
    minute for the token (0: no limits) and BAD_TOKENS_PER_MINUTE wrong
    tokens a minute from the address."""
    row = ApiToken.find(token)  # first: wrong tokens never lock a valid one out
    if row is None:
        wait = per_minute and limits.per_minute(f"api-bad-token:{address}", BAD_TOKENS_PER_MINUTE)
        if wait:
            raise RateLimited("too many requests with a wrong token from this address; wait", wait)
        raise Unauthenticated("this token is unknown, revoked, or its user inactive")
    wait = per_minute and limits.per_minute(f"api-token:{row.id}", per_minute)
    if wait:
        raise RateLimited(f"this token may make {per_minute} requests a minute; wait", wait)
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
        db.session.commit()
    return row.user
