"""Pacing by X's rate limits, shared by every worker process through Redis.

Per connection, Redis keeps the requests to X in flight and how many more
may start before X's budget resets. X's answer says what remained when it
counted its own request; the requests still in flight may not have been
counted yet, so what may start is what remains less those. Each request
that starts takes one. When none is left, the connection is held until the
reset: no batch is claimed or posted for it (a 429 would only be retried).
A request starts, and an answer is read, in one script run, so a request
either starts before an answer is read (and counts among those in flight)
or after (and sees what the answer left)."""

from __future__ import annotations

import functools
import time

import redis
from flask import current_app

from xtag.core.x_answers import believable, rate_limit
from xtag.pipeline import queues
from xtag.x_api import CONNECT_SECONDS, client

# KEYS: the connection's budget (a hash: left, reset), its requests in flight
# (a sorted set: ticket -> start). ARGV: now, ticket, in flight since no
# earlier than (older ones died with their worker).
_START = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
local budget = redis.call('HMGET', KEYS[1], 'left', 'reset')
local reset = tonumber(budget[2])
if reset and reset > tonumber(ARGV[1]) then
  if tonumber(budget[1]) <= 0 then return budget[2] end
  redis.call('HINCRBY', KEYS[1], 'left', -1)
end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[1]) - tonumber(ARGV[3])))
return false
"""

# ARGV: the ticket, in flight since no earlier than, now, then X's remaining
# and reset ('' when it did not say). A window already over says nothing of
# what may start now (an answer read late); within a window X's budget only
# shrinks: an answer read late does not raise what is left.
_ANSWERED = """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[4] == '' or tonumber(ARGV[5]) <= tonumber(ARGV[3]) then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
local left = tonumber(ARGV[4]) - redis.call('ZCARD', KEYS[2])
local reset = tonumber(ARGV[5])
local budget = redis.call('HMGET', KEYS[1], 'left', 'reset')
if tonumber(budget[2]) == reset and tonumber(budget[1]) < left then left = tonumber(budget[1]) end
redis.call('HSET', KEYS[1], 'left', left, 'reset', ARGV[5])
redis.call('EXPIREAT', KEYS[1], math.floor(reset) + 1)
return 0
"""


@functools.lru_cache(maxsize=8)  # per client (one per process): its SHA-1 computed once
def _scripts(client: redis.Redis) -> tuple:
    return client.register_script(_START), client.register_script(_ANSWERED)


def _keys(connection_id: int) -> list[str]:
    return [f"xtag:pace:{{{connection_id}}}", f"xtag:flight:{{{connection_id}}}"]


def _in_flight_since(now: float) -> float:
    """Requests started before this are over, answered or not (a request to
    X gives up after its connect and read timeouts, with room for a slow
    trickle)."""
    return now - CONNECT_SECONDS - 2 * current_app.config["XTAG_X_TIMEOUT_SECONDS"] - 30


def held_until(connection_id: int | None) -> float | None:
    """Epoch seconds until which X's rate limit for this connection is spent."""
    if connection_id is None:
        return None
    left, reset = queues.redis_client().hmget(_keys(connection_id)[0], "left", "reset")
    if reset is None or float(reset) <= time.time() or int(left) > 0:
        return None
    return float(reset)


def posting(connection_id: int, ticket: str) -> float | None:
    """None when a request to X may start now (it is in flight until
    `answered` with the same ticket), else until when the connection is held."""
    start, _ = _scripts(queues.redis_client())
    now = time.time()
    until = start(keys=_keys(connection_id), args=[now, ticket, _in_flight_since(now)])
    return float(until) if until is not None else None


def answered(connection_id: int, ticket: str, answer: client.Answer) -> None:
    """The request is over; what X said of the connection's budget is kept."""
    _, script = _scripts(queues.redis_client())
    limit, now = rate_limit(answer.status, answer.headers), time.time()
    args = [ticket, _in_flight_since(now), now]
    args += [limit.remaining, believable(limit.reset, now)] if limit else ["", ""]
    script(keys=_keys(connection_id), args=args)
