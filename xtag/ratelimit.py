"""Fixed-window rate limits counted in Redis, so a limit holds across every
web process and host. A window's counter expires with the window."""

from __future__ import annotations

import math
import time

import redis

from xtag import fastjson

# Count the cost; over the limit, take it back and refuse; else append to the
# stream. One round trip, so a rate-limited collector costs no extra latency.
_COUNT_THEN_XADD = """
local cost = tonumber(ARGV[1])
local n = redis.call('INCRBY', KEYS[1], cost)
if n == cost then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[3]) then
  redis.call('DECRBY', KEYS[1], cost)
  return false
end
return redis.call('XADD', KEYS[2], '*', ARGV[4], ARGV[5])
"""


def _window(scope: str, seconds: int) -> tuple[str, int]:
    """The counter key for the current window and the seconds until the next."""
    now = time.time()
    start = int(now // seconds)
    return f"xtag:rate:{scope}:{start}", max(1, math.ceil((start + 1) * seconds - now))


def hit(client: redis.Redis, scope: str, limit: int, seconds: int, cost: int = 1) -> int:
    """Count `cost` against `scope`; 0 when within `limit` per `seconds`, else
    the seconds to wait (a Retry-After)."""
    key, retry_after = _window(scope, seconds)
    with client.pipeline(transaction=False) as pipe:
        pipe.incrby(key, cost)
        pipe.expire(key, seconds + 1)
        count, _ = pipe.execute()
    return retry_after if count > limit else 0


def over(client: redis.Redis, scope: str, limit: int, seconds: int) -> int:
    """Like `hit` without counting: 0 while `scope` is under `limit`."""
    key, retry_after = _window(scope, seconds)
    count = client.get(key)
    return retry_after if count is not None and int(count) >= limit else 0


def xadd_within(
    client: redis.Redis,
    stream: str,
    field: str,
    value: list | dict,
    scope: str,
    limit: int,
    cost: int,
) -> str | int:
    """XADD `value` (as JSON) to `stream` if `cost` more fits in `scope`'s
    per-second `limit`: the new entry id, else the seconds to wait."""
    key, retry_after = _window(scope, 1)
    script = client.register_script(_COUNT_THEN_XADD)
    entry_id = script(keys=[key, stream], args=[cost, 2, limit, field, fastjson.dumps(value)])
    return entry_id.decode() if entry_id else retry_after
