"""Logging in to the admin: the password check behind a throttle on failures,
and the first admin `make run` makes sure of."""

from __future__ import annotations

import functools
import secrets

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from xtag.core import checks
from xtag.core.errors import RateLimited
from xtag.extensions import db
from xtag.models import User, utcnow
from xtag.pipeline.queues import redis_client
from xtag.services import limits
from xtag.services.changes import audit


def login(email: str, password: str, address: str | None) -> User | None:
    """The user, when the password is right and the account active (its login
    time recorded); None when not; RateLimited after too many failures."""
    email = email.strip().lower()
    client = redis_client()
    wait = limits.login_locked_for(client, email, address)
    if wait:
        raise RateLimited(f"Too many failed attempts. Try again in {wait // 60 + 1} minutes.", wait)
    user = db.session.scalar(select(User).where(User.email == email))
    if user is not None and user.active and user.check_password(password):
        limits.login_succeeded(client, email, address)
        user.last_login_at = utcnow()
        db.session.commit()
        return user
    if user is None or not user.active:
        check_password_hash(_dummy_hash(), password)  # as long as a real check takes
    limits.login_failed(client, email, address)
    return None


def logout(user: User) -> None:
    """End every session of the user (all its browsers)."""
    user.session_version += 1
    db.session.commit()


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_hex(16), method="scrypt")


def ensure_admin(email: str, password: str) -> User | None:
    """Make `email` an active admin with `password` unless an active admin
    exists already (then None); Invalid for a password too weak."""
    if db.session.scalar(select(User).where(User.role == "admin", User.active.is_(True))):
        return None
    checks.password(password)
    email = email.strip().lower()
    user = db.session.scalar(select(User).where(User.email == email)) or User(email=email)
    user.role, user.active = "admin", True
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    audit(None, "create", "user", user.id, {"email": email, "role": "admin", "password": "changed"})
    db.session.commit()
    return user
