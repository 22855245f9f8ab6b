"""Hand accepted events to Redis in one atomic transaction: the messageId
dedup markers, the identify traits and the RQ job go together or not at all."""

from __future__ import annotations

import hashlib
import uuid

import redis
from rq import Retry

from xtag import queue

DEDUP_SECONDS = 48 * 3600
TRAITS_SECONDS = 30 * 24 * 3600
JOB_RETRIES = (10, 60, 300, 1800, 3600)


def dedup_key(site_id: int, message_id: str) -> str:
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:32]
    return f"xtag:dedup:{site_id}:{digest}"


def traits_key(site_id: int, kind: str, value: str) -> str:
    digest = hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:32]
    return f"xtag:traits:{site_id}:{digest}"


def traits_keys(event: dict) -> list[str]:
    message = event["message"]
    return [
        traits_key(event["site_id"], kind, message[field])
        for kind, field in (("user", "userId"), ("anon", "anonymousId"))
        if message.get(field)
    ]


def enqueue(connection: redis.Redis, events: list[dict]) -> str:
    """Queue the events as one job; returns the job id. Raises redis errors."""
    job_id = uuid.uuid4().hex
    with connection.pipeline(transaction=True) as pipe:
        pipe.multi()
        for event in events:
            pipe.set(
                dedup_key(event["site_id"], event["message"]["messageId"]),
                job_id,
                nx=True,
                ex=DEDUP_SECONDS,
            )
            if event["message"]["type"] == "identify":
                hashed = {
                    k: v
                    for k, v in event["identifiers"].items()
                    if k in ("hashed_email", "hashed_phone_number")
                }
                for key in traits_keys(event) if hashed else ():
                    pipe.hset(key, mapping=hashed)
                    pipe.expire(key, TRAITS_SECONDS)
        queue.queue(queue.EVENTS, connection=connection).enqueue_call(
            "xtag.jobs.process_events",
            kwargs={"events": events},
            job_id=job_id,
            result_ttl=queue.RESULT_TTL,
            failure_ttl=queue.FAILURE_TTL,
            retry=Retry(max=len(JOB_RETRIES), interval=list(JOB_RETRIES)),
            pipeline=pipe,
        )
        pipe.execute()
    return job_id
