"""Logging in to the admin: the password check behind a throttle on failures,
and the first admin `make run` makes sure of."""

from __future__ import annotations

from sqlalchemy import select

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
        limits.login_succeeded(client, email)
        user.last_login_at = utcnow()
        db.session.commit()
        return user
    limits.login_failed(client, email, address)
    return None


def ensure_admin(email: str, password: str) -> User | None:
    """Make `email` an active admin with `password` unless an active admin
    exists already (then None)."""
    if db.session.scalar(select(User).where(User.role == "admin", User.active.is_(True))):
        return None
    email = email.strip().lower()
    user = db.session.scalar(select(User).where(User.email == email)) or User(email=email)
    user.role, user.active = "admin", True
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    audit(None, "create", "user", user.id, {"email": email, "role": "admin", "password": "changed"})
    db.session.commit()
    return user
