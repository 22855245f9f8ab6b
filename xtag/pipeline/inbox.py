"""The intake buffer: a Redis stream of accepted requests, read in bulk by
workers through a consumer group.

RQ's worker runs one job at a time with a fixed cost per job; a browser sends
one event per request, so a job per request would cap intake at a few hundred
events per second per worker. The stream lets one worker take hundreds of
requests in one read, and its pending-entries list gives at-least-once
delivery: an entry is removed only after its events are safely recorded, and
entries a dead worker had read are claimed by another after
XTAG_INBOX_CLAIM_MS.
"""

from __future__ import annotations

from typing import NamedTuple

import redis

from xtag.core import fastjson
from xtag.pipeline.queues import redis_client

STREAM = "xtag:inbox"
DEAD = "xtag:inbox:dead"
DEAD_MAX = 10_000  # entries set aside before the worker stops reading new ones
GROUP = "xtag-workers"


class Entry(NamedTuple):
    id: str
    events: list[dict]


BURST_SECONDS = 10  # a site may send this many seconds of its rate at once

# A token bucket per site (its sustained rate, BURST_SECONDS of it as burst)
# and one per site and address (half the rate). A request is taken while the
# site's bucket is not empty, and, once it is under half full, only from an
# address whose own bucket is not empty: so a flood from one address is
# refused before the site's other visitors are, and below its rate nobody is
# refused for their address. A request may take the bucket below zero (one
# request within the size limits is never refused for its size alone); the
# next wait until it refills. Then the XADD: one round trip in all.
_BUCKETS_THEN_XADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function level(key, r, cap)
  local v = redis.call('HMGET', key, 'tokens', 'at')
  if not v[1] then return cap end
  return math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * r)
end
local cap, arate = rate * burst, rate / 2
local acap = arate * burst
local site, addr = level(KEYS[1], rate, cap), level(KEYS[2], arate, acap)
if site <= 0 then return {0, tostring(math.ceil((1 - site) / rate))} end
if site < cap / 2 and addr <= 0 then return {0, tostring(math.ceil((1 - addr) / arate))} end
local keep = tostring(math.ceil(2 * burst + cost / rate))
redis.call('HSET', KEYS[1], 'tokens', tostring(site - cost), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], keep)
redis.call('HSET', KEYS[2], 'tokens', tostring(math.max(addr - cost, -acap)), 'at', tostring(now))
redis.call('EXPIRE', KEYS[2], keep)
return {1, redis.call('XADD', KEYS[3], '*', ARGV[4], ARGV[5])}
"""


class OverLimit(Exception):
    """The events do not fit in their scope's limit this second."""

    def __init__(self, retry_after: int):
        super().__init__(f"over the limit; retry in {retry_after} s")
        self.retry_after = retry_after


def add(
    client: redis.Redis,
    events: list[dict],
    scope: str = "",
    per_second: int = 0,
    address: str | None = None,
) -> str:
    """Append one request's events; a single XADD, so it is all or nothing.
    With a rate of events `per_second` for `scope` (a site), checked with the
    sender's `address` in the same round trip: OverLimit when they must wait."""
    payload = fastjson.dumps(events)
    if not per_second:
        return client.xadd(STREAM, {"events": payload}).decode()
    keys = [f"xtag:bucket:{scope}", f"xtag:bucket:{scope}:{address or '-'}", STREAM]
    taken, answer = client.register_script(_BUCKETS_THEN_XADD)(
        keys=keys, args=[len(events), per_second, BURST_SECONDS, "events", payload]
    )
    if not taken:
        raise OverLimit(max(1, int(answer)))
    return answer.decode()


def accept(
    events: list[dict], scope: str = "", per_second: int = 0, address: str | None = None
) -> str:
    """The collector's hand-off: `add` on the process's shared Redis client."""
    return add(redis_client(), events, scope, per_second, address)


def ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _entries(raw) -> list[Entry]:
    return [
        Entry(entry_id.decode(), fastjson.loads(fields[b"events"]))
        for entry_id, fields in raw
        if fields
    ]


def read(client: redis.Redis, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
    """New entries for this consumer (blocking up to block_ms when none)."""
    answer = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count, block=block_ms)
    return _entries(answer[0][1]) if answer else []


def pending(client: redis.Redis, consumer: str, count: int) -> list[Entry]:
    """Entries this consumer read earlier and has not acknowledged."""
    answer = client.xreadgroup(GROUP, consumer, {STREAM: "0"}, count=count)
    return _entries(answer[0][1]) if answer else []


def peek(client: redis.Redis) -> list[Entry]:
    """Every entry in the stream, read or not (for inspection and tests)."""
    return _entries(client.xrange(STREAM))


def reclaim(client: redis.Redis, consumer: str, count: int, idle_ms: int) -> list[Entry]:
    """Entries another consumer read but never acknowledged (it died)."""
    answer = client.xautoclaim(STREAM, GROUP, consumer, idle_ms, "0-0", count=count)
    return _entries(answer[1])  # Redis 7 adds a third element (deleted ids)


def done(client: redis.Redis, entry_ids: list[str]) -> None:
    if entry_ids:
        with client.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, GROUP, *entry_ids)
            pipe.xdel(STREAM, *entry_ids)
            pipe.execute()


def set_aside(client: redis.Redis, entry: Entry, reason: str) -> None:
    """Keep an entry that cannot be recorded, for an operator to look at and
    requeue after a fix. Never trimmed: at DEAD_MAX the worker stops reading."""
    client.xadd(DEAD, {"entry": entry.id, "reason": reason, "events": fastjson.dumps(entry.events)})


def set_aside_full(client: redis.Redis) -> bool:
    """The dead-letter stream is at its cap: take no new entries, lose none."""
    return client.xlen(DEAD) >= DEAD_MAX


def dead(client: redis.Redis, count: int) -> list[dict]:
    """The entries set aside, oldest first: id, reason, how many events, sites."""
    found = []
    for entry_id, fields in client.xrange(DEAD, count=count):
        events = fastjson.loads(fields[b"events"])
        found.append(
            {
                "id": entry_id.decode(),
                "reason": fields[b"reason"].decode(),
                "events": len(events),
                "sites": sorted({e.get("site_id") for e in events if isinstance(e, dict)}),
            }
        )
    return found


def requeue(client: redis.Redis, dead_ids: list[str]) -> int:
    """Put set-aside entries back in the inbox (after a fix); how many were."""
    moved = 0
    for entry_id, fields in client.xrange(DEAD, count=DEAD_MAX):
        if entry_id.decode() in dead_ids:
            with client.pipeline(transaction=True) as pipe:
                pipe.xadd(STREAM, {"events": fields[b"events"]})
                pipe.xdel(DEAD, entry_id)
                pipe.execute()
            moved += 1
    return moved


def depth(client: redis.Redis) -> int:
    """Accepted requests not yet recorded (waiting or being processed)."""
    return client.xlen(STREAM)
