"""Failed-login throttling (ASVS 2.2.1), counted in Redis so it holds across
processes: 10 failures for an account or from an address within 15 minutes
lock further attempts until the window passes."""

from __future__ import annotations

import hashlib

import redis

LIMIT = 10
WINDOW_SECONDS = 15 * 60


def _keys(email: str, address: str | None) -> list[str]:
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    keys = [f"xtag:login-failures:account:{digest}"]
    if address:
        keys.append(f"xtag:login-failures:address:{address}")
    return keys


def locked_for(client: redis.Redis, email: str, address: str | None) -> int:
    """Seconds until attempts are allowed again; 0 when they are."""
    keys = _keys(email, address)
    waits = [
        client.ttl(key)
        for key, count in zip(keys, client.mget(keys), strict=True)
        if count is not None and int(count) >= LIMIT
    ]
    return max([w for w in waits if w > 0], default=0)


def failed(client: redis.Redis, email: str, address: str | None) -> None:
    with client.pipeline(transaction=False) as pipe:
        for key in _keys(email, address):
            pipe.set(key, 0, nx=True, ex=WINDOW_SECONDS)  # the window starts at the first failure
            pipe.incr(key)
        pipe.execute()


def succeeded(client: redis.Redis, email: str) -> None:
    client.delete(_keys(email, None)[0])
