"""Late binding: a conversion waiting for its batch picks up identifiers that
arrived for its visitor meanwhile (an identify just after the order, a click
id remembered from the landing page), so the result does not depend on where
the worker's reads split. A conversion that still has nothing X can match on
once it has waited a batch window is dropped, and its event with it, as
`no_identifier`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, select, update

from xtag.core import mapping
from xtag.extensions import db
from xtag.models import DeliveryItem, ReceivedEvent, utcnow
from xtag.pipeline import counters, queues, visitors


def pending(event: dict, conversion: dict) -> dict | None:
    """What a waiting conversion is completed from at claim time, when it
    lacks any identifier X matches on best: the event's own (hashed)
    identifiers and its visitor's memory keys. None when it has them all."""
    present = {key for part in conversion.get("identifiers", ()) for key in part}
    if all(key in present for key in mapping.STRONG):
        return None
    keys = visitors.visitor_keys(event)
    if not keys and conversion.get("identifiers"):
        return None  # nobody to learn more of
    return {"found": event["identifiers"], "keys": keys}


class Claimable(NamedTuple):
    """Of the rows about to be claimed: those to take, and those to leave."""

    take: list[int]
    wait: list[int]  # unidentified, younger than the batch window


def complete(rows: Sequence, window: timedelta, now: datetime | None = None) -> Claimable:
    """Complete the identifiers of `rows` (id, created_at, visitor) that are
    pending; drop those still unidentified after `window`, leave younger
    ones waiting. Writes in the caller's transaction."""
    now = now or utcnow()
    open_rows = [r for r in rows if r.visitor]
    if not open_rows:
        return Claimable([r.id for r in rows], [])
    known = visitors.known(queues.redis_client(), [r.visitor["keys"] for r in open_rows])
    wait, dropped, learned, identified = [], [], {}, []
    for row, memory in zip(open_rows, known, strict=True):
        found = row.visitor["found"]
        before = mapping.identifiers(found)  # what its conversion was built with
        ids = mapping.identifiers({**memory, **found})
        if ids is None:
            (wait if row.created_at + window > now else dropped).append(row.id)
        elif ids != before:
            learned[row.id] = ids
            if before is None:
                identified.append(row.id)
    _learn(learned)
    _drop(dropped)
    _settle_events(identified)
    gone = {*wait, *dropped}
    return Claimable([r.id for r in rows if r.id not in gone], wait)


def _learn(identifiers: dict[int, list[dict]]) -> None:
    """Write the identifiers waiting conversions learned into them."""
    if not identifiers:
        return
    rows = db.session.execute(
        select(DeliveryItem.id, DeliveryItem.conversion).where(DeliveryItem.id.in_(identifiers))
    )
    for item_id, conversion in rows.all():
        db.session.execute(
            update(DeliveryItem)
            .where(DeliveryItem.id == item_id)
            .values(
                conversion={**conversion, "identifiers": identifiers[item_id]},
                match=mapping.match_of({"identifiers": identifiers[item_id]}),
            )
        )


def _drop(item_ids: list[int]) -> None:
    if not item_ids:
        return
    events = db.session.scalars(
        select(DeliveryItem.event_id).where(DeliveryItem.id.in_(item_ids)).distinct()
    ).all()
    db.session.execute(delete(DeliveryItem).where(DeliveryItem.id.in_(item_ids)))
    _resolve(events, "dropped", "no_identifier")


def _settle_events(item_ids: list[int]) -> None:
    """The events of conversions that waited for an identifier and found one."""
    if item_ids:
        events = db.session.scalars(
            select(DeliveryItem.event_id).where(DeliveryItem.id.in_(item_ids)).distinct()
        ).all()
        _resolve(events, "forwarded", None)


def _resolve(event_ids: list[int], outcome: str, reason: str | None) -> None:
    waiting = db.session.execute(
        select(ReceivedEvent.id, ReceivedEvent.site_id).where(
            ReceivedEvent.id.in_([e for e in event_ids if e is not None]),
            ReceivedEvent.outcome == "waiting",
        )
    ).all()
    if not waiting:
        return
    values = {"outcome": outcome, "reason": reason}  # pixels: those it was meant for
    db.session.execute(
        update(ReceivedEvent).where(ReceivedEvent.id.in_([w.id for w in waiting])).values(**values)
    )
    for _, site_id in waiting:
        if outcome == "forwarded":
            counters.EVENTS_FORWARDED.labels(site_id).inc()
        else:
            counters.EVENTS_DROPPED.labels(site_id, reason).inc()
