"""Replay: the received events of a window run again through today's
mappings, e.g. after a mapping was fixed following a day of unmapped orders.

Every conversion xtag already has for the same pixel and conversion id
(waiting, being sent or delivered) is skipped, and so is every event that
was dropped for consent, `integrations` or as a duplicate, or recorded in
test mode: a second replay of the same window makes nothing. A dry run
counts; a real run queues ordinary conversions for their batches."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import NamedTuple

from sqlalchemy import func, insert, select, update

from xtag.core import mapping
from xtag.core.times import iso_ms, parse
from xtag.extensions import db
from xtag.models import DeliveryItem, ReceivedEvent, Replay, utcnow
from xtag.pipeline import batching, queues
from xtag.pipeline.intake import rules_for

CHUNK = 500
DEDUP_WINDOW = timedelta(hours=48)  # X counts a pixel and an API conversion once within it
NOT_REPLAYED = ("consent", "integrations", "duplicate")  # dropped: never sent, by design
HELD = ("waiting", "sending", "delivered")  # a conversion xtag already has
LOCK_SECONDS = 600


class Made(NamedTuple):
    pixel_key: int
    pixel_id: str
    event_id: int
    conversion: dict


def _window(replay: Replay) -> list:
    """The received events a replay runs through: its site, window and name,
    track events recorded live and not dropped on purpose."""
    conditions = [
        ReceivedEvent.site_id == replay.site_id,
        ReceivedEvent.received_at >= replay.since,
        ReceivedEvent.received_at < replay.until,
        ReceivedEvent.type == "track",
        ReceivedEvent.test.is_(False),
        ~((ReceivedEvent.outcome == "dropped") & ReceivedEvent.reason.in_(NOT_REPLAYED)),
    ]
    if replay.event_name:
        conditions.append(ReceivedEvent.event_name == replay.event_name)
    return conditions


def _events(replay: Replay, after: int):
    query = (
        select(ReceivedEvent)
        .where(*_window(replay), ReceivedEvent.id > after)
        .order_by(ReceivedEvent.id)
        .limit(CHUNK)
    )
    return db.session.scalars(query).all()


def count(replay: Replay) -> int:
    """How many events the replay reads (for progress)."""
    return db.session.scalar(select(func.count(ReceivedEvent.id)).where(*_window(replay))) or 0


def _conversions(rows: list[ReceivedEvent], rules: dict) -> list[Made]:
    """What today's mappings make of these events (with an identifier X can use)."""
    made = []
    for row in rows:
        event = {
            "site_id": row.site_id,
            "received_at": iso_ms(row.received_at),
            "message": row.message,
            "identifiers": row.identifiers or {},
        }
        result = mapping.conversions_for(event, rules.get((row.site_id, row.event_name), []))
        if result.reason:  # unmapped today, or nothing X can match on
            continue
        made += [Made(r.pixel_key, r.pixel_id, row.id, c) for r, c in result.conversions]
    return made


def _held(made: list[Made]) -> set[tuple[int, str]]:
    """Of these conversions, the (pixel, conversion id) pairs xtag already has."""
    ids = {m.conversion.get("conversion_id") for m in made} - {None}
    if not ids:
        return set()
    rows = db.session.execute(
        select(DeliveryItem.pixel_key, DeliveryItem.conversion_id).where(
            DeliveryItem.conversion_id.in_(ids),
            DeliveryItem.pixel_key.in_({m.pixel_key for m in made}),
            DeliveryItem.test.is_(False),
            DeliveryItem.status.in_(HELD),
        )
    )
    return {(p, c) for p, c in rows}


def _queue(made: list[Made]) -> None:
    now = utcnow()
    db.session.execute(
        insert(DeliveryItem.__table__),
        [
            {
                "pixel_key": m.pixel_key,
                "event_id": m.event_id,
                "conversion_id": m.conversion.get("conversion_id"),
                "conversion": m.conversion,
                "visitor": None,
                "status": "waiting",
                "test": False,
                "match": mapping.match_of(m.conversion),
                "created_at": now,
            }
            for m in made
        ],
    )
    pixels: dict[int, list[str]] = {}
    for m in made:
        pixels.setdefault(m.event_id, [])
        if m.pixel_id not in pixels[m.event_id]:
            pixels[m.event_id].append(m.pixel_id)
    for event_id, pixel_ids in pixels.items():
        db.session.execute(
            update(ReceivedEvent)
            .where(ReceivedEvent.id == event_id)
            .values(outcome="forwarded", reason="replayed", pixels=pixel_ids)
        )


def run(replay: Replay) -> Replay:
    """Go through the window in chunks, counting (dry run) or queueing, and
    recording progress after each chunk."""
    replay.status, replay.total = "running", count(replay)
    db.session.commit()
    rules = rules_for({replay.site_id})
    seen: set[tuple[int, str | None]] = set()
    per_pixel: Counter = Counter()
    old = utcnow() - DEDUP_WINDOW
    after, pixel_keys = 0, set()
    while rows := _events(replay, after):
        after = rows[-1].id
        made = _conversions(rows, rules)
        held = _held(made)
        fresh = []
        for m in made:
            key = (m.pixel_key, m.conversion.get("conversion_id"))
            if key in held or key in seen:
                replay.skipped += 1
                continue
            seen.add(key)
            fresh.append(m)
            per_pixel[m.pixel_id] += 1
            if parse(m.conversion["conversion_time"]) < old:
                replay.older_than_48h += 1
        if fresh and not replay.dry_run:
            _queue(fresh)
        replay.events += len(rows)
        replay.conversions = dict(per_pixel)
        db.session.commit()
        if fresh and not replay.dry_run:  # full batches go at once, the tail when due
            pixels = {m.pixel_key for m in fresh}
            batching.schedule_flushes(pixels)
            pixel_keys |= pixels
    replay.status, replay.finished_at = "done", utcnow()
    db.session.commit()
    for pixel_key in pixel_keys:
        batching.flush(pixel_key, at=utcnow() + batching.window())
    return replay


def run_queued(replay_id: int) -> str:
    """The job: one replay of a site at a time, so two cannot queue the same
    conversion twice."""
    replay = db.session.get(Replay, replay_id)
    if replay is None or replay.status != "queued":
        return replay.status if replay else "missing"
    lock = queues.redis_client().lock(
        f"xtag:lock:replay:{replay.site_id}", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS
    )
    with lock:
        try:
            return run(replay).status
        except Exception as exc:
            db.session.rollback()
            replay.status, replay.error, replay.finished_at = "failed", str(exc)[:500], utcnow()
            db.session.commit()
            raise
