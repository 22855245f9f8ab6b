"""Batching: conversions wait per pixel in the database (`delivery_items`
without a delivery), written in the same transaction as the events they came
from, so nothing accepted can be lost between the intake and X. A flush job
per pixel claims up to 500 of them into a delivery and sends it; a short tail
waits up to the batch window; the sweep recovers what a dead worker left."""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from flask import current_app
from rq import get_current_job
from sqlalchemy import Select, select, union_all, update

from xtag import logs
from xtag.extensions import db
from xtag.models import Delivery, DeliveryItem, Pixel, utcnow
from xtag.pipeline import binding, queues
from xtag.pipeline.pacing import held_until
from xtag.pipeline.sending import SENDERS, ids_in, retry_later, send, senders

BATCH_MAX = 500
JOB_SECONDS = 60  # a flush job claims batches this long at most
OVERDUE_SECONDS = 10
FLUSH_JOB = "xtag.pipeline.jobs.deliver_pixel"

log = logging.getLogger(__name__)


def window() -> timedelta:
    return timedelta(milliseconds=current_app.config["XTAG_BATCH_WINDOW_MS"])


class Due(NamedTuple):
    """Pixels whose flush the intake runs when the batch window ends: `later`
    keep the due time they have, if any; `sent` just had full batches sent at
    once, and what those left (under 500, young) is due a window from now."""

    later: frozenset[int] = frozenset()
    sent: frozenset[int] = frozenset()


def _waiting(pixel_keys: set[int], offset: int) -> dict:
    """For each pixel, its waiting conversion number `offset` in claim order
    (0: the first), if there is one: pixel -> that conversion's created_at.
    One statement, each pixel's part a short range of the waiting index."""
    parts: list[Select] = [
        select(
            select(DeliveryItem.pixel_key, DeliveryItem.created_at)
            .where(DeliveryItem.pixel_key == pixel_key, DeliveryItem.delivery_id.is_(None))
            .order_by(DeliveryItem.id)
            .offset(offset)
            .limit(1)
            .subquery()
        )
        for pixel_key in sorted(pixel_keys)
    ]
    if not parts:
        return {}
    return dict(db.session.execute(union_all(*parts) if len(parts) > 1 else parts[0]).all())


def schedule_flushes(pixel_keys: set[int]) -> Due:
    """After conversions were buffered (by a replay): flush at once where 500 wait."""
    if not pixel_keys:
        return Due()
    sent = frozenset(_waiting(pixel_keys, BATCH_MAX - 1))
    for pixel_key in sent:
        flush(pixel_key)
    return Due(frozenset(pixel_keys) - sent, sent)


# pixel -> conversions this process buffered since it last flushed the pixel
_buffered: Counter[int] = Counter()


def buffered(counts: Counter[int]) -> Due:
    """After the intake buffered `counts` conversions per pixel: flush a pixel
    at once when this process has buffered 500 for it since its last flush.
    No query per read: a flush takes every full batch waiting, whoever
    buffered it, and the rest goes when its window ends."""
    _buffered.update(counts)
    sent = frozenset(p for p in counts if _buffered[p] >= BATCH_MAX)
    for pixel_key in sent:
        flush(pixel_key)
    return Due(frozenset(counts) - sent, sent)


def flush_if_due(pixel_keys: set[int] | list[int]) -> dict[int, float]:
    """Flush each pixel whose first waiting conversion has waited the batch
    window (what claim looks at); for the others, in how many seconds it
    will have. A pixel with nothing waiting is neither."""
    now = utcnow()
    later = {}
    for pixel_key, created_at in _waiting(set(pixel_keys), 0).items():
        wait = (created_at + window() - now).total_seconds()
        if wait <= 0:
            flush(pixel_key)
        else:
            later[pixel_key] = wait + 0.002  # never a moment before claim would agree
    return later


def _flag(pixel_key: int) -> str:
    return f"xtag:flush:{pixel_key}"


def flush(pixel_key: int, at: datetime | None = None) -> None:
    """Queue a flush job for a pixel unless one is queued and not yet started
    (that one will take whatever is waiting when it starts)."""
    _buffered.pop(pixel_key, None)
    if queues.redis_client().set(_flag(pixel_key), 1, nx=True, ex=300):
        queues.enqueue(FLUSH_JOB, at, pixel_key=pixel_key)


def claim(pixel_key: int) -> int | None:
    """Move up to 500 waiting conversions of a pixel into a new delivery.

    A short tail (< 500) is only taken once its oldest conversion has waited
    the batch window; otherwise a flush is scheduled for then.
    """
    items = DeliveryItem.__table__.c  # Core columns: plain rows, no ORM loading
    rows = db.session.execute(
        select(items.id, items.created_at, items.visitor, items.test)
        .where(items.pixel_key == pixel_key, items.delivery_id.is_(None))
        .order_by(items.id)
        .limit(BATCH_MAX)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        db.session.rollback()
        return None
    test = rows[0].test  # test and live conversions never share a batch
    rows = [r for r in rows if r.test == test]
    if len(rows) < BATCH_MAX and rows[0].created_at + window() > utcnow():
        db.session.rollback()  # a worker's flush timer looks again when they are due
        return None
    claimable = binding.complete(rows, window())
    if claimable.wait:  # unidentified and young: settled once they have waited a window
        oldest = min(r.created_at for r in rows if r.id in set(claimable.wait))
        flush(pixel_key, at=oldest + window())
    if not claimable.take:
        db.session.commit()  # what was dropped; what waits is flushed when due
        return None
    pixel = db.session.get(Pixel, pixel_key)
    status = "test" if test else "sending"  # taken by this job: send() need not take it again
    delivery = Delivery(pixel_key=pixel_key, connection_id=pixel.connection_id, status=status)
    db.session.add(delivery)
    db.session.flush()
    taken = db.session.execute(
        update(DeliveryItem.__table__)
        .where(ids_in(DeliveryItem.id, claimable.take), DeliveryItem.delivery_id.is_(None))
        .values(delivery_id=delivery.id, status="test" if test else "sending")
    ).rowcount
    if not taken:
        db.session.rollback()
        return None
    delivery.conversions = taken
    db.session.commit()
    return delivery.id


def deliver_pixel(pixel_key: int) -> int:
    """Claim and send batches for a pixel until only a young tail waits; on
    PostgreSQL the next batch is claimed while earlier ones are being sent
    (SENDERS at once, each in a thread and database session of its own)."""
    queues.redis_client().delete(_flag(pixel_key))
    pixel = db.session.get(Pixel, pixel_key)
    if pixel is None:
        return 0
    claims = _claims(pixel_key, pixel.connection_id)
    if senders() > 1:
        return _send_at_once(pixel_key, claims)
    sent = 0
    for delivery_id in claims:
        send(delivery_id, claimed=True)  # a test delivery is only recorded
        sent += 1
    return sent


def _claims(pixel_key: int, connection_id: int | None) -> Iterator[int]:
    """Batches claimed one after another until only a young tail waits. The
    job stops sooner, leaving the rest to the pixel's next flush job, while
    X's rate limit for the connection is spent (that job runs from the
    reset), and after JOB_SECONDS (under a steady flood a job would never
    run out of batches, and RQ kills a job at queues.JOB_TIMEOUT)."""
    until = time.monotonic() + JOB_SECONDS
    while not _held(pixel_key, connection_id) and (delivery_id := claim(pixel_key)) is not None:
        yield delivery_id
        if time.monotonic() >= until:
            flush(pixel_key)
            return


def _held(pixel_key: int, connection_id: int | None) -> bool:
    held = held_until(connection_id)
    if held:
        flush(pixel_key, at=datetime.fromtimestamp(held + random.uniform(0, 1), UTC))
    return bool(held)


def _send_at_once(pixel_key: int, claims: Iterator[int]) -> int:
    """Each batch sent in a sender thread, SENDERS at a time. A sender is
    free before its batch is claimed, so no claimed batch waits for one;
    once a batch failed, no more are claimed (the next flush job, or the
    sweep, goes on with them), and the job fails with the first error."""
    app, slots = current_app._get_current_object(), threading.BoundedSemaphore(senders())
    fields = contextvars.copy_context()  # the job's log fields go with each batch's lines
    if job := get_current_job():
        fields.run(logs.bind, job=job.id)  # RQ knows its current job in this thread only
    sending: list[Future] = []
    try:
        while slots.acquire() and not any(f.done() and f.exception() for f in sending):
            delivery_id = next(claims, None)
            if delivery_id is None:
                break
            run = fields.copy().run  # a context is entered by one thread at a time
            sending.append(_pool().submit(run, _send_apart, app, delivery_id, slots))
    finally:
        wait(sending)  # the job ends when its batches are sent (a worker stops after it)
    errors = [f.exception() for f in sending if f.exception() is not None]
    for error in errors[1:]:
        log.error("pixel %s: another batch failed too: %r", pixel_key, error)
    if errors:
        raise errors[0]
    return len(sending)


def _send_apart(app, delivery_id: int, slots: threading.BoundedSemaphore) -> None:
    try:
        with app.app_context():
            send(delivery_id, claimed=True)
    finally:
        slots.release()


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """This process's sender threads, started when first needed."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(SENDERS, thread_name_prefix="xtag-send")
        return _executor


def sweep() -> int:
    """Recover work a dead worker left: deliveries stuck in 'sending' or never
    sent, retries overdue (RQ's scheduler lock can stay with a dead worker
    for two minutes), and waiting conversions whose flush was lost.
    Returns how many were requeued."""
    stale = utcnow() - timedelta(seconds=current_app.config["XTAG_STALE_SENDING_SECONDS"])
    overdue = utcnow() - timedelta(seconds=OVERDUE_SECONDS)
    stuck = db.session.scalars(
        select(Delivery).where(
            ((Delivery.status == "sending") & (Delivery.updated_at < stale))
            | ((Delivery.status == "pending") & (Delivery.created_at < stale))
            | ((Delivery.status == "retrying") & (Delivery.next_retry_at < overdue))
        )
    ).all()
    for delivery in stuck:  # RQ's scheduler may be held by a dead worker's lock
        retry_later(delivery, utcnow())
    late = utcnow() - 2 * window() - timedelta(seconds=1)
    pixels = db.session.scalars(
        select(DeliveryItem.pixel_key)
        .where(DeliveryItem.delivery_id.is_(None), DeliveryItem.created_at < late)
        .distinct()
    ).all()
    db.session.commit()
    for pixel_key in pixels:
        queues.redis_client().delete(_flag(pixel_key))  # its queued job may have died with a worker
        flush(pixel_key)
    return len(stuck) + len(pixels)
