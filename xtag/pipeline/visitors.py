"""What xtag remembers across requests, in Redis: the messageIds it has seen
(48 hours, per site) and the hashed traits of identify calls (30 days, per
site and anonymousId/userId). Used by the worker as it reads the inbox."""

from __future__ import annotations

import hashlib

import redis

DEDUP_SECONDS = 48 * 3600
TRAITS_SECONDS = 30 * 24 * 3600
TRAIT_FIELDS = ("hashed_email", "hashed_phone_number")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def dedup_key(site_id: int, message_id: str) -> str:
    return f"xtag:dedup:{site_id}:{_digest(message_id)}"


def traits_key(site_id: int, kind: str, value: str) -> str:
    return f"xtag:traits:{site_id}:{_digest(f'{kind}:{value}')}"


def traits_keys(event: dict) -> list[str]:
    message = event["message"]
    return [
        traits_key(event["site_id"], kind, message[field])
        for kind, field in (("user", "userId"), ("anon", "anonymousId"))
        if message.get(field)
    ]


def duplicates(client: redis.Redis, pairs: list[tuple[str, dict]]) -> list[bool]:
    """For (inbox entry id, event) pairs: True for a repeat of a messageId.

    The first entry to claim a messageId (SET NX) owns it for 48 hours; an
    entry read again after a worker died still owns its own messageIds, so
    a crash never turns an event into a 'duplicate'.
    """
    keys = [dedup_key(e["site_id"], e["message"]["messageId"]) for _, e in pairs]
    with client.pipeline(transaction=False) as pipe:
        for (owner, _), key in zip(pairs, keys, strict=True):
            pipe.set(key, owner, nx=True, ex=DEDUP_SECONDS)
        claimed = pipe.execute()
    lost = [key for key, won in zip(keys, claimed, strict=True) if not won]
    owners = dict(zip(lost, client.mget(lost), strict=True)) if lost else {}
    seen: set[str] = set()
    verdicts = []
    for (owner, _), key, won in zip(pairs, keys, claimed, strict=True):
        mine = won or (owners[key] or b"").decode() == owner
        verdicts.append(not mine or key in seen)
        seen.add(key)
    return verdicts


def remember_traits(client: redis.Redis, events: list[dict]) -> None:
    """Keep the hashed email/phone of identify calls for later events."""
    with client.pipeline(transaction=False) as pipe:
        for event in events:
            hashed = {k: v for k, v in event["identifiers"].items() if k in TRAIT_FIELDS}
            if event["message"]["type"] == "identify" and hashed:
                for key in traits_keys(event):
                    pipe.hset(key, mapping=hashed)
                    pipe.expire(key, TRAITS_SECONDS)
        pipe.execute()


def with_traits(client: redis.Redis, events: list[dict]) -> None:
    """Complete identifiers from earlier identify calls of the same visitor."""
    wanting = [
        e
        for e in events
        if e["message"]["type"] != "identify"
        and not all(k in e["identifiers"] for k in TRAIT_FIELDS)
        and traits_keys(e)
    ]
    if not wanting:
        return
    with client.pipeline(transaction=False) as pipe:
        for event in wanting:
            for key in traits_keys(event):
                pipe.hgetall(key)
        answers = iter(pipe.execute())
    for event in wanting:
        for _ in traits_keys(event):
            for name, value in next(answers).items():
                event["identifiers"].setdefault(name.decode(), value.decode())
