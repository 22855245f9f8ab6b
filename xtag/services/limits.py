"""Limits counted in Redis, so they hold across every web process and host:
management-API requests per token and wrong tokens per address (fixed
windows), and failed logins per account and per address (ASVS 2.2.1)."""

from __future__ import annotations

import hashlib

import redis

from xtag.core.windows import window
from xtag.pipeline.queues import redis_client

UNKNOWN_KEY_LOOKUPS = 120  # per minute and address: write keys no cache knows yet
LOGIN_FAILURES = 10  # within LOGIN_WINDOW_SECONDS, for an account from one address
LOGIN_FAILURES_PER_ADDRESS = 50  # ... for any accounts from one address
LOGIN_WINDOW_SECONDS = 15 * 60


def hit(client: redis.Redis, scope: str, limit: int, seconds: int, cost: int = 1) -> int:
    """Count `cost` against `scope`; 0 when within `limit` per `seconds`, else
    the seconds to wait (a Retry-After)."""
    key, retry_after = window(scope, seconds)
    with client.pipeline(transaction=False) as pipe:
        pipe.incrby(key, cost)
        pipe.expire(key, seconds + 1)
        count, _ = pipe.execute()
    return retry_after if count > limit else 0


def _login_keys(email: str, address: str | None) -> list[tuple[str, int]]:
    """Failures counted per account and address (so nobody can lock the
    account out for everyone else), and per address (for password spraying)."""
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return [
        (f"xtag:login-failures:account:{digest}:{address}", LOGIN_FAILURES),
        (f"xtag:login-failures:address:{address}", LOGIN_FAILURES_PER_ADDRESS),
    ]


def login_locked_for(client: redis.Redis, email: str, address: str | None) -> int:
    """Seconds until login attempts are allowed again; 0 when they are."""
    keys = _login_keys(email, address)
    counts = client.mget([key for key, _ in keys])
    waits = [
        client.ttl(key)
        for (key, limit), count in zip(keys, counts, strict=True)
        if count is not None and int(count) >= limit
    ]
    return max([w for w in waits if w > 0], default=0)


def login_failed(client: redis.Redis, email: str, address: str | None) -> None:
    with client.pipeline(transaction=False) as pipe:
        for key, _ in _login_keys(email, address):
            pipe.set(key, 0, nx=True, ex=LOGIN_WINDOW_SECONDS)  # the window starts at the first
            pipe.incr(key)
        pipe.execute()


def login_succeeded(client: redis.Redis, email: str, address: str | None) -> None:
    client.delete(_login_keys(email, address)[0][0])


def per_minute(scope: str, limit: int) -> int:
    """Count one request against `limit` a minute for `scope`: seconds to
    wait, 0 when within it; fails open when Redis is down (what it guards
    works without Redis)."""
    try:
        return hit(redis_client(), scope, limit, 60)
    except (redis.RedisError, OSError):
        return 0


def unknown_key_wait(address: str | None) -> int:
    """Seconds this address must wait before another write key is looked up
    in the database (made-up keys cost a query each)."""
    return per_minute(f"key-lookups:{address}", UNKNOWN_KEY_LOOKUPS)
