"""Worker liveness: each worker reports in Redis every few seconds; /readyz,
the dashboard and /metrics count those that reported lately."""

from __future__ import annotations

import time

import redis

TTL = 30  # a worker silent for longer counts as dead
WORKERS = "xtag:workers"  # sorted set: worker name -> last heartbeat (epoch seconds)
FORGOTTEN_AFTER = 24 * 3600


def beat(client: redis.Redis, name: str) -> None:
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.zadd(WORKERS, {name: now})
        pipe.zremrangebyscore(WORKERS, "-inf", now - FORGOTTEN_AFTER)  # long-dead names
        pipe.execute()


def alive(client: redis.Redis, within: float = TTL) -> list[str]:
    """Names of workers that reported within `within` seconds."""
    names = client.zrangebyscore(WORKERS, time.time() - within, "+inf")
    return sorted(name.decode() for name in names)


def stopped(client: redis.Redis, name: str) -> None:
    """A worker that stops cleanly is gone at once, not after TTL."""
    client.zrem(WORKERS, name)
