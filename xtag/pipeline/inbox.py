"""The intake buffer: a Redis stream of accepted requests, read in bulk by
workers through a consumer group.

RQ's worker runs one job at a time with a fixed cost per job; a browser sends
one event per request, so a job per request would cap intake at a few hundred
events per second per worker. The stream lets one worker take hundreds of
requests in one read, and its pending-entries list gives at-least-once
delivery: an entry is removed only after its events are safely recorded, and
entries a dead worker had read are claimed by another after
XTAG_INBOX_CLAIM_MS.

The inbox is XTAG_INBOX_SHARDS streams (1 by default), a site's requests
always in the same one, so its events keep their order; shard 0 is the
stream of old, so nothing queued before a change of the setting is lost.
Workers read every shard in one XREADGROUP; the dead letters are one stream.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

import redis
from flask import current_app

from xtag.core import fastjson
from xtag.pipeline.queues import lane, redis_client

STREAM = "xtag:inbox"  # shard 0
MAX_SHARDS = 16  # more streams on one Redis buy nothing; the configuration refuses more
NAMES = (STREAM, *(f"{STREAM}:{n}" for n in range(1, MAX_SHARDS)))
DEAD = "xtag:inbox:dead"
DEAD_MAX = 10_000  # entries set aside before the worker stops reading new ones
GROUP = "xtag-workers"


class Entry(NamedTuple):
    id: str  # unique within its stream ('ms-seq'): what claims its messageIds
    events: list[dict]
    stream: str = STREAM
    read_at: float | None = None  # epoch seconds the worker read it


def streams(shards: int) -> tuple[str, ...]:
    """The inbox's stream names for XTAG_INBOX_SHARDS = `shards`."""
    return NAMES[: max(1, min(shards, MAX_SHARDS))]


def stream_for(events: list[dict], shards: int) -> str:
    """A request's stream: its site's shard."""
    if shards <= 1 or not events:
        return STREAM
    return NAMES[int(events[0].get("site_id") or 0) % min(shards, MAX_SHARDS)]


BURST_SECONDS = 10  # a site may send this many seconds of its rate at once

# A token bucket per site (its sustained rate, BURST_SECONDS of it as burst)
# and one per site and address (half the rate). A request is taken while the
# site's bucket is not empty, and, once it is under half full, only from an
# address whose own bucket is not empty: so a flood from one address is
# refused before the site's other visitors are, and below its rate nobody is
# refused for their address. A request may take the bucket below zero (one
# request within the size limits is never refused for its size alone); the
# next wait until it refills. Then the XADD: one round trip in all.
#
# While the site's bucket is over half full, the script also leases the
# calling process ARGV[6] more tokens from the top half (see Leases); the
# events the process took from its last lease are charged to their
# addresses' buckets first (KEYS[4...] with ARGV[7...]), so a flood from one
# address empties its bucket as it would have event by event.
_BUCKETS_THEN_XADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease = tonumber(ARGV[6])
local function level(key, r, cap)
  local v = redis.call('HMGET', key, 'tokens', 'at')
  if not v[1] then return cap end
  return math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * r)
end
local function keep(key, tokens)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', key, tostring(math.ceil(2 * burst + cost / rate)))
end
local cap, arate = rate * burst, rate / 2
local acap = arate * burst
for i = 4, #KEYS do
  keep(KEYS[i], math.max(level(KEYS[i], arate, acap) - tonumber(ARGV[i + 3]), -acap))
end
local site, addr = level(KEYS[1], rate, cap), level(KEYS[2], arate, acap)
if site <= 0 then return {0, tostring(math.ceil((1 - site) / rate))} end
if site < cap / 2 and addr <= 0 then return {0, tostring(math.ceil((1 - addr) / arate))} end
if site - cost - lease < cap / 2 then lease = 0 end
keep(KEYS[1], site - cost - lease)
keep(KEYS[2], math.max(addr - cost, -acap))
return {1, redis.call('XADD', KEYS[3], '*', ARGV[4], ARGV[5]), lease}
"""

LEASE_SECONDS = 0.05  # a lease is this much of the site's rate...
LEASE_MAX = 100  # ...at most this many events (so at most this many addresses to charge)
LEASE_LIFE = 1.0  # seconds a lease's unused tokens stay usable


class Leases:
    """Tokens this process took ahead from sites' buckets, so that while a
    site is well within its limit a request is a plain XADD: the bucket
    script runs once per lease, not once per request. Leases come only out
    of the top half of a bucket (below it every request is checked, with its
    address), expire after LEASE_LIFE, and note the addresses they served,
    to be charged with the next script run. Sites under 40 events/s get
    none: every request is checked, as before leases."""

    def __init__(self):
        self._held: dict[tuple[str, int], list] = {}  # (scope, rate) -> [tokens, until, served]
        self._lock = threading.Lock()

    @staticmethod
    def size(per_second: int) -> int:
        size = min(LEASE_MAX, int(per_second * LEASE_SECONDS))
        return size if size >= 2 else 0

    def take(self, key: tuple[str, int], cost: int, address: str) -> bool:
        """Spend `cost` tokens of the lease for `key`, if it holds them."""
        with self._lock:
            lease = self._held.get(key)
            if lease is None or lease[0] < cost or time.monotonic() >= lease[1]:
                return False
            lease[0] -= cost
            lease[2][address] = lease[2].get(address, 0) + cost
            return True

    def served(self, key: tuple[str, int]) -> dict[str, int]:
        """The addresses the lease for `key` served, and how many events
        each, to be charged now; the lease itself is spent."""
        with self._lock:
            lease = self._held.pop(key, None)
        return lease[2] if lease else {}

    def grant(self, key: tuple[str, int], tokens: int) -> None:
        if tokens > 0:
            with self._lock:
                self._held[key] = [tokens, time.monotonic() + LEASE_LIFE, {}]

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


LEASES = Leases()  # one per process: a forked child starts with none
os.register_at_fork(after_in_child=LEASES.clear)


class OverLimit(Exception):
    """The events do not fit in their scope's limit this second."""

    def __init__(self, retry_after: int):
        super().__init__(f"over the limit; retry in {retry_after} s")
        self.retry_after = retry_after


@functools.lru_cache(maxsize=8)  # per client (one per process): its SHA-1 computed once
def _buckets_then_xadd(client: redis.Redis):
    return client.register_script(_BUCKETS_THEN_XADD)


def _bucket(scope: str, address: str) -> str:
    return f"xtag:bucket:{scope}:{address}" if address else f"xtag:bucket:{scope}"


def add(
    client: redis.Redis,
    events: list[dict],
    scope: str = "",
    per_second: int = 0,
    address: str | None = None,
    shards: int = 1,
) -> str:
    """Append one request's events to its site's shard; a single XADD, so it
    is all or nothing. With a rate of events `per_second` for `scope` (a
    site), checked with the sender's `address` in the same round trip (or
    taken from this process's lease): OverLimit when they must wait."""
    payload = fastjson.dumps(events)
    stream = stream_for(events, shards)
    address = address or "-"
    lease = (scope, per_second)
    if not per_second or LEASES.take(lease, len(events), address):
        return lane(client).execute("XADD", stream, "*", "events", payload).decode()
    served = LEASES.served(lease)
    keys = [_bucket(scope, ""), _bucket(scope, address), stream]
    keys += [_bucket(scope, a) for a in served]
    args = [len(events), per_second, BURST_SECONDS, "events", payload, Leases.size(per_second)]
    answer = _buckets_then_xadd(client)(keys=keys, args=args + list(served.values()))
    if not answer[0]:
        raise OverLimit(max(1, int(answer[1])))
    LEASES.grant(lease, answer[2])
    return answer[1].decode()


def accept(
    events: list[dict], scope: str = "", per_second: int = 0, address: str | None = None
) -> str:
    """The collector's hand-off: `add` on the process's shared Redis client."""
    shards = current_app.config["XTAG_INBOX_SHARDS"]
    return add(redis_client(), events, scope, per_second, address, shards)


def ensure_group(client: redis.Redis, streams: Sequence[str] = (STREAM,)) -> None:
    for stream in streams:
        try:
            client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def _entries(raw, stream: str) -> list[Entry]:
    now = time.time()
    return [
        Entry(entry_id.decode(), fastjson.loads(fields[b"events"]), stream, now)
        for entry_id, fields in raw
        if fields
    ]


def _answer(answer) -> list[Entry]:
    """XREADGROUP's answer over several streams, as entries."""
    return [entry for name, raw in answer or () for entry in _entries(raw, name.decode())]


def read(
    client: redis.Redis,
    consumer: str,
    count: int,
    block_ms: int | None,
    streams: Sequence[str] = (STREAM,),
) -> list[Entry]:
    """New entries for this consumer, up to `count` from each stream (blocking
    up to block_ms when there are none)."""
    answer = client.xreadgroup(
        GROUP, consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms
    )
    return _answer(answer)


def pending(
    client: redis.Redis, consumer: str, count: int, streams: Sequence[str] = (STREAM,)
) -> list[Entry]:
    """Entries this consumer read earlier and has not acknowledged."""
    return _answer(client.xreadgroup(GROUP, consumer, dict.fromkeys(streams, "0"), count=count))


def peek(client: redis.Redis) -> list[Entry]:
    """Every entry in every stream, read or not (for inspection and tests)."""
    with client.pipeline(transaction=False) as pipe:
        for stream in NAMES:
            pipe.xrange(stream)
        answers = pipe.execute()
    found = [e for stream, raw in zip(NAMES, answers, strict=True) for e in _entries(raw, stream)]
    return sorted(found, key=lambda e: tuple(map(int, e.id.split("-"))))


def reclaim(
    client: redis.Redis,
    consumer: str,
    count: int,
    idle_ms: int,
    streams: Sequence[str] = (STREAM,),
) -> list[Entry]:
    """Entries another consumer read but never acknowledged (it died)."""
    with client.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xautoclaim(stream, GROUP, consumer, idle_ms, "0-0", count=count)
        answers = pipe.execute()
    # Redis 7 adds a third element to each answer (deleted ids)
    return [e for stream, a in zip(streams, answers, strict=True) for e in _entries(a[1], stream)]


def done(client: redis.Redis, entries: Sequence[Entry]) -> None:
    """Acknowledge and remove recorded entries, from whichever stream each is in."""
    by_stream: dict[str, list[str]] = {}
    for entry in entries:
        by_stream.setdefault(entry.stream, []).append(entry.id)
    if by_stream:
        with client.pipeline(transaction=True) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
            pipe.execute()


def set_aside(client: redis.Redis, entry: Entry, reason: str) -> None:
    """Keep an entry that cannot be recorded, for an operator to look at and
    requeue after a fix. Never trimmed: at DEAD_MAX the worker stops reading."""
    fields = {"entry": entry.id, "stream": entry.stream, "reason": reason}
    client.xadd(DEAD, {**fields, "events": fastjson.dumps(entry.events)})


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
    """Put set-aside entries back in the inbox (after a fix); how many were.
    Into shard 0, which every worker reads whatever XTAG_INBOX_SHARDS is."""
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
    """Accepted requests not yet recorded (waiting or being processed), in
    every shard there may be (whatever this process's XTAG_INBOX_SHARDS)."""
    return backlog(client)["depth"]


def backlog(client: redis.Redis) -> dict:
    """For monitoring, in one round trip: `depth` (as above), the age of
    the oldest entry in any shard (`oldest_age_seconds`), entries set
    aside (`dead`)."""
    with client.pipeline(transaction=False) as pipe:
        for stream in NAMES:
            pipe.xlen(stream)
            pipe.xrange(stream, count=1)
        pipe.xlen(DEAD)
        *answers, dead = pipe.execute()
    firsts = [raw[0][0] for raw in answers[1::2] if raw]
    oldest = min((int(first.split(b"-")[0]) for first in firsts), default=None)
    age = time.time() - oldest / 1000 if oldest is not None else 0.0
    return {"depth": sum(answers[::2]), "oldest_age_seconds": max(age, 0.0), "dead": dead}
