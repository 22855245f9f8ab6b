"""The RQ worker xtag runs: non-forking, one fresh app context per job.

RQ's default worker forks a process per job (tens of jobs per second); xtag's
jobs are short and carry many events each, so a SimpleWorker that keeps its
imports, database pool and Redis connection warm is the right shape.
"""

from __future__ import annotations

from flask import Flask
from rq import SimpleWorker

from xtag import queue


class AppWorker(SimpleWorker):
    flask_app: Flask

    def perform_job(self, job, queue):
        with self.flask_app.app_context():
            return super().perform_job(job, queue)


def run(app: Flask, burst: bool = False) -> bool:
    connection = queue.redis_client(app)
    worker = AppWorker(
        [queue.queue(name, connection=connection) for name in queue.QUEUES],
        connection=connection,
        serializer=queue.SERIALIZER,
    )
    worker.flask_app = app
    return worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
