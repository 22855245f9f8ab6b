"""Hand accepted events to Redis in one atomic transaction: the messageId
dedup markers, the identify traits and the inbox entry go together or not at all."""

from __future__ import annotations

import hashlib
import uuid

import redis

from xtag import inbox

DEDUP_SECONDS = 48 * 3600
TRAITS_SECONDS = 30 * 24 * 3600
TRAIT_FIELDS = ("hashed_email", "hashed_phone_number")


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
    """Queue the events; returns the token their dedup markers carry.

    A marker is written only if absent (SET NX), holding this token: the
    worker forwards an event only when the marker names its own token, so a
    real repeat is dropped while a re-read of this same entry is not.
    Raises redis errors, in which case nothing was written.
    """
    token = uuid.uuid4().hex
    with connection.pipeline(transaction=True) as pipe:
        for event in events:
            key = dedup_key(event["site_id"], event["message"]["messageId"])
            pipe.set(key, token, nx=True, ex=DEDUP_SECONDS)
            hashed = {k: v for k, v in event["identifiers"].items() if k in TRAIT_FIELDS}
            if event["message"]["type"] == "identify" and hashed:
                for trait_key in traits_keys(event):
                    pipe.hset(trait_key, mapping=hashed)
                    pipe.expire(trait_key, TRAITS_SECONDS)
        inbox.add(pipe, token, events)
        pipe.execute()
    return token
