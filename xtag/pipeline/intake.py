"""Intake: record what the inbox holds. Each event with its outcome, and
the conversions it makes waiting for their batch, in one transaction."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime

from sqlalchemy import insert, select, update

from xtag.core import mapping
from xtag.core.times import parse
from xtag.extensions import db
from xtag.models import DeliveryItem, Mapping, Pixel, ReceivedEvent, Site, utcnow
from xtag.pipeline import batching, binding, counters, inbox, queues, visitors


def rule(row: Mapping, pixel_id: str) -> mapping.Rule:
    """A mapping as the mapper takes it (saved, or a draft being typed)."""
    return mapping.Rule(row.pixel_key, pixel_id, row.x_event_id, row.description, row.fields or {})


def rules_for(site_ids: set[int]) -> dict[tuple[int, str], list[mapping.Rule]]:
    """Enabled mappings by (site, event name), as the mapper takes them."""
    rules: dict[tuple[int, str], list[mapping.Rule]] = defaultdict(list)
    rows = db.session.execute(
        select(Mapping, Pixel.pixel_id)
        .join(Pixel, Mapping.pixel_key == Pixel.id)
        .where(Mapping.site_id.in_(site_ids), Mapping.enabled.is_(True))
        .order_by(Mapping.id)
    )
    for row, pixel_id in rows:
        rules[(row.site_id, row.event_name)].append(rule(row, pixel_id))
    return rules


def test_sites(site_ids: set[int]) -> set[int]:
    """Of these sites, those in test mode now (the mode an event is recorded in)."""
    return set(db.session.scalars(select(Site.id).where(Site.id.in_(site_ids), Site.test_mode)))


def record(entries: list[inbox.Entry]) -> batching.Due:
    """Record inbox entries: each event with its outcome, and the conversions
    it produced waiting for their batch, in one transaction. Returns the
    pixels whose partial batch is to be flushed when the batch window ends."""
    pairs = [(entry.id, event) for entry in entries for event in entry.events]
    if not pairs:
        return batching.Due()
    client = queues.redis_client()
    verdicts = visitors.duplicates(client, pairs)
    events = [event for _, event in pairs]
    visitors.recall(client, events)
    site_ids = {e["site_id"] for e in events}
    rules = rules_for(site_ids)
    testing = test_sites(site_ids)
    rows, results = [], []
    last_seen: dict[int, datetime] = {}
    for event, duplicate in zip(events, verdicts, strict=True):
        message = event["message"]
        name, reason, result = mapping.outcome(
            event, duplicate, rules.get((event["site_id"], message["event"]), [])
        )
        received = parse(event["received_at"])
        if not event.get("test"):  # a test event from the admin says nothing of the snippet
            last_seen[event["site_id"]] = max(received, last_seen.get(event["site_id"], received))
        pixels = [rule.pixel_id for rule, _ in result.conversions] if result else []
        rows.append(
            {
                "site_id": event["site_id"],
                "message_id": message["messageId"],
                "type": message["type"],
                "event_name": message["event"],
                "received_at": received,
                "outcome": name,
                "reason": reason,
                "pixels": pixels,
                "identifiers": event["identifiers"],
                "sources": event.get("sources") or {},
                "message": message,
                "test": bool(event.get("test")) or event["site_id"] in testing,
            }
        )
        results.append(result)
    ids = db.session.scalars(
        insert(ReceivedEvent.__table__).returning(
            ReceivedEvent.__table__.c.id, sort_by_parameter_order=True
        ),
        rows,
    ).all()
    buffered_at = utcnow()
    items = [
        {
            "pixel_key": rule.pixel_key,
            "event_id": event_id,
            "conversion_id": conversion.get("conversion_id"),
            "conversion": conversion,
            "visitor": binding.pending(event, conversion),
            "status": "waiting",
            "test": row["test"],
            "match": mapping.match_of(conversion),
            "created_at": buffered_at,  # the batch window runs from here
        }
        for event_id, event, row, result in zip(ids, events, rows, results, strict=True)
        if result
        for rule, conversion in result.conversions
    ]
    if items:
        db.session.execute(insert(DeliveryItem.__table__), items)  # Core: no ORM bulk overhead
    for site_id, moment in last_seen.items():
        db.session.execute(
            update(Site)
            .where(Site.id == site_id, Site.last_event_at.is_(None) | (Site.last_event_at < moment))
            .values(last_event_at=moment)
        )
    db.session.commit()
    _count(rows)
    return batching.schedule_flushes({item["pixel_key"] for item in items})


# outcome -> the reason label when the outcome's own reason is free text or none
DROP_REASONS = {"unmapped": "unmapped", "identified": "identify", "ignored": "not_a_conversion"}


def _count(rows: list[dict]) -> None:
    outcomes = Counter((row["site_id"], row["outcome"], row["reason"]) for row in rows)
    for (site_id, name, reason), n in outcomes.items():
        if name == "waiting":
            continue  # counted when its batch settles it (binding)
        if name == "forwarded":
            counters.EVENTS_FORWARDED.labels(site_id).inc(n)
        else:
            counters.EVENTS_DROPPED.labels(site_id, DROP_REASONS.get(name, reason)).inc(n)
