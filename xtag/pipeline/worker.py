"""`flask --app app xtag worker`: the intake consumer and an RQ worker in one process.

The intake consumer (xtag.pipeline.consuming, in threads) reads the inbox
stream in bulk, records events and keeps the schedule; the RQ worker (main
thread, non-forking, with the scheduler) runs deliveries and retries. RQ's
default worker forks a process per job; xtag's jobs are short, so a
SimpleWorker that keeps its database pool and Redis connection warm is the
right shape, and no SQLAlchemy engine is ever shared across a fork.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time

import redis
from flask import Flask
from rq import SimpleWorker
from rq.exceptions import StopRequested

from xtag.extensions import db
from xtag.pipeline import heartbeat, queues
from xtag.pipeline.consuming import Consumer

log = logging.getLogger(__name__)

GC_THRESHOLD = 20_000  # new container objects between the cycle collector's young passes


class AppWorker(SimpleWorker):
    flask_app: Flask
    stopping = False  # an operator asked it to stop (SIGINT / SIGTERM)

    def perform_job(self, job, queue):
        with self.flask_app.app_context():
            return super().perform_job(job, queue)

    def request_stop(self, signum, frame):
        self.stopping = True
        super().request_stop(signum, frame)


def _rq_work_due(connection: redis.Redis) -> bool:
    """Queued jobs, or scheduled ones whose time has come (RQ's burst mode
    costs a second of pub/sub teardown, so skip it when there is nothing)."""
    now = time.time()
    for name in queues.QUEUES:
        q = queues.queue(name, connection=connection)
        if q.count or q.scheduled_job_registry.get_jobs_to_schedule(int(now)):
            return True
    return False


def run(app: Flask, burst: bool = False) -> bool:
    # RQ blocks on Redis for minutes while idle: its own client, without the
    # shared client's 5 s socket timeout (which made an idle worker quit).
    connection = queues.connect(app)
    try:
        return _run(app, connection, burst)
    finally:
        connection.close()


def _forget_engine_in_forks(app: Flask) -> None:
    """RQ's scheduler runs in a forked process: it must not reuse the
    parent's database connections (SQLAlchemy's advice for fork)."""
    with app.app_context():
        engine = db.engine
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))


def _rq_worker(app: Flask, connection: redis.Redis) -> AppWorker:
    worker = AppWorker(
        [queues.queue(name, connection=connection) for name in queues.QUEUES],
        connection=connection,
        serializer=queues.SERIALIZER,
    )
    worker.flask_app = app
    return worker


def _redis_back(connection: redis.Redis, worker: AppWorker) -> bool:
    """Wait until Redis answers (True), unless a stop is asked for (False)."""
    try:
        while not worker.stopping:
            try:
                connection.ping()
                return True
            except redis.RedisError:
                time.sleep(1)
    except StopRequested:  # the signal arrived while waiting
        pass
    return False


def _work(app: Flask, connection: redis.Redis) -> None:
    """RQ's worker quits on a Redis error (Redis restarted, a failover); a
    worker process must outlive that, so a new one starts once Redis is back."""
    while True:
        worker = _rq_worker(app, connection)
        with contextlib.suppress(redis.RedisError):  # its clean-up talks to Redis too
            worker.work(with_scheduler=True, logging_level="INFO")
        if worker.stopping or not _redis_back(connection, worker):
            return
        log.warning("worker: RQ stopped on a Redis error; Redis answers again, starting anew")


def _spare_the_collector() -> None:
    """Keep Python's cycle collector off what the worker set up (the app, its
    models, SQLAlchemy's and RQ's internals: over 100,000 objects that live as
    long as the process) and run it less often: each read makes thousands of
    short-lived dicts, which kept starting collections that walked all of
    those again, a sixth of the worker's CPU under a backlog."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def _run(app: Flask, connection: redis.Redis, burst: bool) -> bool:
    if not burst:
        _forget_engine_in_forks(app)
    consumer = Consumer(app)
    if burst:
        worker = _rq_worker(app, connection)
        consumer.sweep()
        consumer.drain()
        while _rq_work_due(connection):
            worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
            consumer.drain()
        return True
    _spare_the_collector()
    threads = [
        threading.Thread(target=consumer.run_forever, name="xtag-intake", daemon=True),
        threading.Thread(target=consumer.keep_schedule, name="xtag-schedule", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        _work(app, connection)
        return True
    finally:
        consumer.stop.set()
        for thread in threads:
            thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):  # its heartbeat expires anyway
            heartbeat.stopped(consumer.client, consumer.name)
