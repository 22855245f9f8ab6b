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
from xtag.core.windows import window
from xtag.pipeline.queues import redis_client

STREAM = "xtag:inbox"
DEAD = "xtag:inbox:dead"
GROUP = "xtag-workers"


class Entry(NamedTuple):
    id: str
    events: list[dict]


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


class OverLimit(Exception):
    """The events do not fit in their scope's limit this second."""

    def __init__(self, retry_after: int):
        super().__init__(f"over the limit; retry in {retry_after} s")
        self.retry_after = retry_after


def add(client: redis.Redis, events: list[dict], scope: str = "", per_second: int = 0) -> str:
    """Append one request's events; a single XADD, so it is all or nothing.
    With a limit of events `per_second` for `scope`, counted in the same round
    trip: OverLimit when these events do not fit."""
    payload = fastjson.dumps(events)
    if not per_second:
        return client.xadd(STREAM, {"events": payload}).decode()
    key, retry_after = window(scope, 1)
    entry_id = client.register_script(_COUNT_THEN_XADD)(
        keys=[key, STREAM], args=[len(events), 2, per_second, "events", payload]
    )
    if entry_id is None:
        raise OverLimit(retry_after)
    return entry_id.decode()


def accept(events: list[dict], scope: str = "", per_second: int = 0) -> str:
    """The collector's hand-off: `add` on the process's shared Redis client."""
    return add(redis_client(), events, scope, per_second)


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
    """Keep an entry that cannot be recorded, for an operator to look at."""
    client.xadd(DEAD, {"entry": entry.id, "reason": reason, "events": fastjson.dumps(entry.events)})


def depth(client: redis.Redis) -> int:
    """Accepted requests not yet recorded (waiting or being processed)."""
    return client.xlen(STREAM)
