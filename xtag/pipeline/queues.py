"""Queue names, the Redis connection and job defaults, owned in one place."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from flask import Flask, current_app
from rq import Queue
from rq.serializers import JSONSerializer

from xtag import embedded

DELIVERIES = "xtag-deliveries"  # events arrive through the inbox stream, not RQ
QUEUES = (DELIVERIES,)

JOB_TIMEOUT = 300
RESULT_TTL = 0
FAILURE_TTL = 7 * 24 * 3600
SERIALIZER = JSONSerializer
JOB_DEFAULTS = {"result_ttl": RESULT_TTL, "failure_ttl": FAILURE_TTL}


def redis_url(app: Flask) -> str:
    return app.config["REDIS_URL"] or embedded.url(app.instance_path)


def connect(app: Flask, **options) -> redis.Redis:
    """A new Redis client; the embedded server is started first if need be."""
    if not app.config["REDIS_URL"]:
        embedded.start(app.instance_path)
    return redis.Redis.from_url(
        redis_url(app), socket_connect_timeout=2, health_check_interval=30, **options
    )


def redis_client(app: Flask | None = None) -> redis.Redis:
    """The process's shared Redis client (short timeouts: nothing here blocks long)."""
    app = app or current_app._get_current_object()
    client = app.extensions.get("xtag_redis")
    if client is None:
        client = app.extensions["xtag_redis"] = connect(app, socket_timeout=5)
    return client


def queue(name: str = DELIVERIES, connection: redis.Redis | None = None) -> Queue:
    """An xtag queue; jobs are JSON so what sits in Redis is readable plain data."""
    return Queue(
        name,
        connection=connection or redis_client(),
        default_timeout=JOB_TIMEOUT,
        serializer=SERIALIZER,
    )


def enqueue(function: str, at: datetime | None, job_id: str | None = None, **kwargs) -> None:
    """Run a job (by its dotted name) now, or at `at` through RQ's scheduler."""
    target = queue(DELIVERIES)
    if at is None or at <= datetime.now(UTC):
        target.enqueue_call(function, kwargs=kwargs, job_id=job_id, **JOB_DEFAULTS)
    else:
        target.enqueue_at(at, function, job_id=job_id, **kwargs, **JOB_DEFAULTS)
