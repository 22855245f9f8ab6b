"""Queue names, the Redis connection and job defaults, owned in one place."""

from __future__ import annotations

import functools
import os
import threading
import weakref
from datetime import UTC, datetime

import hiredis
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


class Lane:
    """A Redis connection a process keeps for one hot command (the
    collector's XADD). redis-py opens it (the client's URL, TLS, auth,
    database and timeouts); the command and its reply then go straight over
    its socket through hiredis, without the client's check-out, readiness
    probe, retry wrapper and check-in, which cost more CPU per request than
    the command itself. A connection that breaks is dropped and the command
    sent once more on a new one (a restarted Redis, a proxy that hung up),
    as the client's own retry would; an error reply is raised as
    redis.ResponseError, anything else as a redis.RedisError."""

    def __init__(self, client: redis.Redis):
        self._pool = client.connection_pool
        self._connection = None
        self._socket = None
        self._reader = hiredis.Reader()
        self._lock = threading.Lock()
        _LANES.add(self)

    def forget(self) -> None:
        """In a forked child: the parent's socket is never used (nor closed)."""
        self._connection = self._socket = None
        self._lock = threading.Lock()

    def execute(self, *args):
        with self._lock:
            if self._socket is not None:
                try:
                    return self._round_trip(args)
                except redis.ConnectionError:
                    pass  # once more, on a new connection
            self._connect()
            return self._round_trip(args)

    def _connect(self) -> None:
        self._drop()
        connection = self._pool.make_connection()
        connection.connect()  # the client's handshake: TLS, AUTH, SELECT
        self._connection, self._socket = connection, connection._sock
        self._reader = hiredis.Reader()

    def _round_trip(self, args: tuple):
        try:
            self._socket.sendall(hiredis.pack_command(args))
            reply = self._reader.gets()
            while reply is False:
                data = self._socket.recv(65536)
                if not data:
                    raise redis.ConnectionError("Redis closed the connection")
                self._reader.feed(data)
                reply = self._reader.gets()
        except TimeoutError as exc:  # the reply may still come: the connection is spent
            self._drop()
            raise redis.TimeoutError(f"Redis did not answer: {exc}") from exc
        except (OSError, redis.ConnectionError, hiredis.ProtocolError) as exc:
            self._drop()
            raise redis.ConnectionError(f"Redis connection lost: {exc}") from exc
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))
        return reply

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.disconnect()
        self._connection = self._socket = None


_LANES: weakref.WeakSet[Lane] = weakref.WeakSet()
os.register_at_fork(after_in_child=lambda: [lane.forget() for lane in list(_LANES)])


@functools.lru_cache(maxsize=8)  # one per client, so one per process
def lane(client: redis.Redis) -> Lane:
    return Lane(client)


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
