"""Fixed-window rate limits counted in Redis, so a limit holds across every
web process and host. A window's counter expires with the window."""

from __future__ import annotations

import math
import time

import redis


def window(scope: str, seconds: int) -> tuple[str, int]:
    """The counter key for the current window and the seconds until the next."""
    now = time.time()
    start = int(now // seconds)
    return f"xtag:rate:{scope}:{start}", max(1, math.ceil((start + 1) * seconds - now))


def hit(client: redis.Redis, scope: str, limit: int, seconds: int, cost: int = 1) -> int:
    """Count `cost` against `scope`; 0 when within `limit` per `seconds`, else
    the seconds to wait (a Retry-After)."""
    key, retry_after = window(scope, seconds)
    with client.pipeline(transaction=False) as pipe:
        pipe.incrby(key, cost)
        pipe.expire(key, seconds + 1)
        count, _ = pipe.execute()
    return retry_after if count > limit else 0


def over(client: redis.Redis, scope: str, limit: int, seconds: int) -> int:
    """Like `hit` without counting: 0 while `scope` is under `limit`."""
    key, retry_after = window(scope, seconds)
    count = client.get(key)
    return retry_after if count is not None and int(count) >= limit else 0
