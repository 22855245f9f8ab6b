"""Work done by workers on plain data (inbox entries, ids), never ORM objects.

RQ job functions here are a contract: add keyword arguments with defaults only.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import insert, select, update

from xtag import inbox, queue
from xtag.collector.enqueue import dedup_key, traits_keys
from xtag.collector.intake import parse_time
from xtag.extensions import db
from xtag.models import Mapping, ReceivedEvent, Site

STRONG = ("twclid", "hashed_email", "hashed_phone_number")


def duplicates(pairs: list[tuple[str, dict]]) -> list[bool]:
    """For (token, event) pairs: True when the event's messageId was first
    accepted under another token, or earlier in this same read."""
    keys = [dedup_key(e["site_id"], e["message"]["messageId"]) for _, e in pairs]
    owners = queue.redis_client().mget(keys) if keys else []
    seen: set[str] = set()
    verdicts = []
    for (token, _), key, owner in zip(pairs, keys, owners, strict=True):
        mine = owner is None or owner.decode() == token
        verdicts.append(not mine or key in seen)
        seen.add(key)
    return verdicts


def with_traits(events: list[dict]) -> None:
    """Complete identifiers from earlier identify calls of the same visitor."""
    wanting = [
        e
        for e in events
        if e["message"]["type"] != "identify"
        and not all(k in e["identifiers"] for k in ("hashed_email", "hashed_phone_number"))
        and traits_keys(e)
    ]
    if not wanting:
        return
    with queue.redis_client().pipeline(transaction=False) as pipe:
        for event in wanting:
            for key in traits_keys(event):
                pipe.hgetall(key)
        answers = iter(pipe.execute())
    for event in wanting:
        for _ in traits_keys(event):
            for name, value in next(answers).items():
                event["identifiers"].setdefault(name.decode(), value.decode())


def _outcome(event: dict, duplicate: bool, mapped: dict) -> tuple[str, str | None, list[str]]:
    message = event["message"]
    if event.get("drop") == "consent":
        return "dropped", "consent", []
    if duplicate:
        return "dropped", "duplicate", []
    if message["type"] == "identify":
        return "identified", None, []
    if message["event"] is None:
        return "ignored", f"{message['type']} messages are not conversions", []
    pixels = mapped.get((event["site_id"], message["event"]), [])
    if not pixels:
        return "unmapped", None, []
    if not any(k in event["identifiers"] for k in STRONG):
        return "dropped", "no_identifier", []
    return "queued", None, pixels


def record(entries: list[inbox.Entry]) -> int:
    """Record the events of inbox entries with their outcome, in one transaction."""
    pairs = [(entry.token, event) for entry in entries for event in entry.events]
    if not pairs:
        return 0
    verdicts = duplicates(pairs)
    events = [event for _, event in pairs]
    with_traits(events)
    mapped: dict[tuple[int, str], list[str]] = defaultdict(list)
    rows = db.session.execute(
        select(Mapping.site_id, Mapping.event_name, Mapping.pixel_key).where(
            Mapping.site_id.in_({e["site_id"] for e in events}), Mapping.enabled.is_(True)
        )
    )
    for site_id, event_name, pixel_key in rows:
        mapped[(site_id, event_name)].append(str(pixel_key))
    values = []
    last_seen: dict[int, datetime] = {}
    for event, duplicate in zip(events, verdicts, strict=True):
        outcome, reason, pixels = _outcome(event, duplicate, mapped)
        message = event["message"]
        received = parse_time(event["received_at"])
        last_seen[event["site_id"]] = max(received, last_seen.get(event["site_id"], received))
        values.append(
            {
                "site_id": event["site_id"],
                "message_id": message["messageId"],
                "type": message["type"],
                "event_name": message["event"],
                "received_at": received,
                "outcome": outcome,
                "reason": reason,
                "pixels": pixels,
                "identifiers": event["identifiers"],
                "message": message,
            }
        )
    db.session.execute(insert(ReceivedEvent), values)
    for site_id, moment in last_seen.items():
        db.session.execute(
            update(Site)
            .where(
                Site.id == site_id, (Site.last_event_at.is_(None)) | (Site.last_event_at < moment)
            )
            .values(last_event_at=moment)
        )
    db.session.commit()
    return len(values)
