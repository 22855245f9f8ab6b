"""Requests the collector refused, per site, so a site setting up an SDK can
see why without the server log: a count and the latest 100 (when, status,
reason; never the body). Refusals before any site is known (an unknown
write key) are kept under `UNKNOWN` for the dashboard. Kept in Redis, for
30 days after the latest."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis

from xtag.core import fastjson
from xtag.core.times import iso_ms
from xtag.pipeline.queues import redis_client

log = logging.getLogger(__name__)

KEEP = 100
REASON_MAX = 300
KEPT_SECONDS = 30 * 24 * 3600
UNKNOWN = "unknown"


def _keys(site_id: int | str) -> tuple[str, str]:
    return f"xtag:refused:{site_id}", f"xtag:refused-count:{site_id}"


def record(site_id: int | None, refused: list[tuple[int, str]]) -> None:
    """Note (status, reason) refusals; never fails the answer they explain."""
    latest, count = _keys(UNKNOWN if site_id is None else site_id)
    at = iso_ms(datetime.now(UTC))
    entries = [
        fastjson.dumps({"at": at, "status": status, "reason": reason[:REASON_MAX]})
        for status, reason in refused
    ]
    try:
        with redis_client().pipeline(transaction=False) as pipe:
            pipe.lpush(latest, *entries)
            pipe.ltrim(latest, 0, KEEP - 1)
            pipe.incrby(count, len(entries))
            for key in (latest, count):
                pipe.expire(key, KEPT_SECONDS)
            pipe.execute()
    except (redis.RedisError, OSError) as exc:
        log.warning("could not note %d refusals: %s", len(entries), type(exc).__name__)


def latest(site_id: int | str) -> dict:
    """{"count": refusals in all, "items": the latest, newest first}."""
    latest_key, count_key = _keys(site_id)
    with redis_client().pipeline(transaction=False) as pipe:
        pipe.lrange(latest_key, 0, KEEP - 1)
        pipe.get(count_key)
        items, count = pipe.execute()
    return {"count": int(count or 0), "items": [fastjson.loads(i) for i in items]}


def latest_or_none(site_id: int | str) -> dict:
    """`latest`, or nothing known when Redis cannot be read (pages still render)."""
    try:
        return latest(site_id)
    except (redis.RedisError, OSError):
        return {"count": 0, "items": []}
