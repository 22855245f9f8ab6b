"""What xtag remembers across requests, in Redis: the messageIds it has seen
(48 hours, per site), and per site and visitor (anonymousId, userId) the
latest click id and the hashed traits of identify calls (30 days), so that
later events of the visitor carry them whatever client sent them. Ids that
one event carries together (an identify or any event with both, an alias's
previousId and userId) are linked: each then reads what the other knows.
Used by the worker as it reads the inbox."""

from __future__ import annotations

import hashlib

import redis

DEDUP_SECONDS = 48 * 3600
MEMORY_SECONDS = 30 * 24 * 3600
TRAIT_FIELDS = ("hashed_email", "hashed_phone_number")  # from identify calls only
REMEMBERED = ("twclid", *TRAIT_FIELDS)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def dedup_key(site_id: int, message_id: str) -> str:
    return f"xtag:dedup:{site_id}:{_digest(message_id)}"


def visitor_key(site_id: int, kind: str, value: str) -> str:
    return f"xtag:traits:{site_id}:{_digest(f'{kind}:{value}')}"


def _links_key(key: str) -> str:
    return "xtag:links:" + key.split(":", 2)[2]


def visitor_keys(event: dict) -> list[str]:
    """The event's own visitor keys: its userId's and anonymousId's, and for
    an alias its previousId's (which may have been either)."""
    message, site = event["message"], event["site_id"]
    keys = [
        visitor_key(site, kind, message[field])
        for kind, field in (("user", "userId"), ("anon", "anonymousId"))
        if message.get(field)
    ]
    if message["type"] == "alias" and message.get("previousId"):
        keys += [visitor_key(site, kind, message["previousId"]) for kind in ("user", "anon")]
    return keys


def _remembered(event: dict) -> dict[str, str]:
    found = event["identifiers"]
    kept = {"twclid": found["twclid"]} if found.get("twclid") else {}
    if event["message"]["type"] == "identify":
        kept |= {k: v for k, v in found.items() if k in TRAIT_FIELDS}
    return kept


def _links(client: redis.Redis, own: list[list[str]]) -> dict[str, set[str]]:
    """Each visitor key involved -> the keys linked to it: those stored, and
    those this read carries together with it."""
    involved = sorted({key for keys in own for key in keys})
    with client.pipeline(transaction=False) as pipe:
        for key in involved:
            pipe.smembers(_links_key(key))
        found = pipe.execute()
    linked = {key: {m.decode() for m in ms} for key, ms in zip(involved, found, strict=True)}
    for keys in own:
        for key in keys:
            linked[key] |= set(keys) - {key}
    return linked


def _wants(event: dict) -> bool:
    found = event["identifiers"]
    return event["message"]["type"] != "identify" and not all(k in found for k in REMEMBERED)


def _whole(keys: list[str], linked: dict[str, set[str]]) -> list[str]:
    """A visitor's keys and the keys linked to them."""
    return sorted({*keys, *(other for key in keys for other in linked[key])})


def _merged(answers, count: int) -> dict[str, str]:
    """One visitor's memory from `count` HGETALL answers (the first value wins)."""
    merged: dict[str, str] = {}
    for _ in range(count):
        for name, value in next(answers).items():
            merged.setdefault(name.decode(), value.decode())
    return merged


def known(client: redis.Redis, visitors: list[list[str]]) -> list[dict[str, str]]:
    """What is remembered of each visitor (given by its keys)."""
    linked = _links(client, visitors)
    wholes = [_whole(keys, linked) for keys in visitors]
    with client.pipeline(transaction=False) as pipe:
        for keys in wholes:
            for key in keys:
                pipe.hgetall(key)
        answers = iter(pipe.execute())
    return [_merged(answers, len(keys)) for keys in wholes]


def recall(client: redis.Redis, events: list[dict]) -> None:
    """Remember what each event tells of its visitor, link the ids it carries
    together, then complete every event's missing identifiers from what is
    known of its visitor (this read's events included, whatever their order)."""
    own = [visitor_keys(e) for e in events]
    linked = _links(client, own)
    visitors = [_whole(keys, linked) for keys in own]
    wanting = [(e, keys) for e, keys in zip(events, visitors, strict=True) if keys and _wants(e)]
    with client.pipeline(transaction=False) as pipe:
        for key, others in linked.items():
            if others:
                pipe.sadd(_links_key(key), *others)
                pipe.expire(_links_key(key), MEMORY_SECONDS)
        for event, keys in zip(events, visitors, strict=True):
            if kept := _remembered(event):
                for key in keys:
                    pipe.hset(key, mapping=kept)
                    pipe.expire(key, MEMORY_SECONDS)
        writes = len(pipe)
        for _, keys in wanting:
            for key in keys:
                pipe.hgetall(key)
        answers = iter(pipe.execute()[writes:])
    for event, keys in wanting:
        for name, value in _merged(answers, len(keys)).items():
            if name not in event["identifiers"]:
                event["identifiers"][name] = value
                event.setdefault("sources", {})[name] = "memory"


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
