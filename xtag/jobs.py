"""RQ job functions. They take plain data (ids and dicts), never ORM objects,
and their signatures are a contract: add keyword arguments with defaults only."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from rq import get_current_job
from sqlalchemy import select, update

from xtag import queue
from xtag.collector.enqueue import dedup_key, traits_keys
from xtag.collector.intake import parse_time
from xtag.extensions import db
from xtag.models import Mapping, ReceivedEvent, Site

STRONG = ("twclid", "hashed_email", "hashed_phone_number")


def _duplicates(events: list[dict], job_id: str | None) -> list[bool]:
    """True for an event whose messageId was first queued by another job
    (or earlier in this one): the collector's dedup marker says which."""
    keys = [dedup_key(e["site_id"], e["message"]["messageId"]) for e in events]
    owners = queue.redis_client().mget(keys) if keys else []
    seen: set[str] = set()
    verdicts = []
    for key, owner in zip(keys, owners, strict=True):
        mine = owner is None or job_id is None or owner.decode() == job_id
        verdicts.append(not mine or key in seen)
        seen.add(key)
    return verdicts


def _with_traits(events: list[dict]) -> None:
    """Complete identifiers from earlier identify calls of the same visitor."""
    client = queue.redis_client()
    wanting = [e for e in events if not any(k in e["identifiers"] for k in STRONG[1:])]
    if not wanting:
        return
    with client.pipeline(transaction=False) as pipe:
        for event in wanting:
            for key in traits_keys(event):
                pipe.hgetall(key)
        answers = iter(pipe.execute())
    for event in wanting:
        for _ in traits_keys(event):
            stored = {k.decode(): v.decode() for k, v in next(answers).items()}
            for name, value in stored.items():
                event["identifiers"].setdefault(name, value)


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


def process_events(events: list[dict]) -> int:
    """Record accepted events with their outcome; returns how many were recorded."""
    job = get_current_job()
    duplicates = _duplicates(events, job.id if job else None)
    _with_traits(events)
    site_ids = {e["site_id"] for e in events}
    mapped: dict[tuple[int, str], list[str]] = defaultdict(list)
    rows = db.session.execute(
        select(Mapping.site_id, Mapping.event_name, Mapping.pixel_key).where(
            Mapping.site_id.in_(site_ids), Mapping.enabled.is_(True)
        )
    )
    for site_id, event_name, pixel_key in rows:
        mapped[(site_id, event_name)].append(str(pixel_key))
    last_seen: dict[int, datetime] = {}
    for event, duplicate in zip(events, duplicates, strict=True):
        outcome, reason, pixels = _outcome(event, duplicate, mapped)
        message = event["message"]
        received = parse_time(event["received_at"])
        last_seen[event["site_id"]] = max(received, last_seen.get(event["site_id"], received))
        db.session.add(
            ReceivedEvent(
                site_id=event["site_id"],
                message_id=message["messageId"],
                type=message["type"],
                event_name=message["event"],
                received_at=received,
                outcome=outcome,
                reason=reason,
                pixels=pixels,
                identifiers=event["identifiers"],
                message=message,
            )
        )
    for site_id, moment in last_seen.items():
        db.session.execute(update(Site).where(Site.id == site_id).values(last_event_at=moment))
    db.session.commit()
    return len(events)
