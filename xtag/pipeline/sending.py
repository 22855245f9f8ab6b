"""Conversions waiting per pixel -> batches of up to 500 -> X, signed, paced,
retried and logged.

Conversions wait in the database (`delivery_items` without a delivery), written
in the same transaction as the events they came from, so nothing accepted can
be lost between the intake and X. A flush job per pixel claims up to 500 of
them into a delivery, sends it, and records every HTTP attempt.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import requests
from flask import current_app
from sqlalchemy import func, select, update

from xtag import connections, metrics, queue
from xtag.extensions import db
from xtag.models import Connection, Delivery, DeliveryAttempt, DeliveryItem, Pixel, utcnow
from xtag.x_api import auth, client
from xtag.x_api.responses import Verdict, classify

log = logging.getLogger(__name__)

BATCH_MAX = 500
OUTSTANDING = ("sending",)
OVERDUE_SECONDS = 10

_session: requests.Session | None = None


class Item(NamedTuple):
    """A conversion being sent: its row id and the conversion itself (plain
    rows, not ORM objects: a batch is 500 of them)."""

    id: int
    conversion: dict


def _outstanding(delivery_id: int) -> list[Item]:
    rows = db.session.execute(
        select(DeliveryItem.id, DeliveryItem.conversion)
        .where(DeliveryItem.delivery_id == delivery_id, DeliveryItem.status.in_(OUTSTANDING))
        .order_by(DeliveryItem.id)
    )
    return [Item(*row) for row in rows]


def _settle(ids: list[int], status: str, error: str | None) -> None:
    db.session.execute(
        update(DeliveryItem).where(DeliveryItem.id.in_(ids)).values(status=status, error=error)
    )


def _give_up(delivery_id: int, error: str) -> int:
    """Every conversion still outstanding fails (keeping an earlier error);
    returns how many."""
    return db.session.execute(
        update(DeliveryItem)
        .where(DeliveryItem.delivery_id == delivery_id, DeliveryItem.status.in_(OUTSTANDING))
        .values(status="failed", error=func.coalesce(DeliveryItem.error, error))
    ).rowcount


def _statuses(delivery_id: int) -> set[str]:
    return set(
        db.session.scalars(
            select(DeliveryItem.status).where(DeliveryItem.delivery_id == delivery_id).distinct()
        )
    )


def http() -> requests.Session:
    global _session
    if _session is None:
        _session = requests.Session()
    return _session


# --- scheduling ---------------------------------------------------------------


def _window() -> timedelta:
    return timedelta(milliseconds=current_app.config["XTAG_BATCH_WINDOW_MS"])


def _hold_key(connection_id: int) -> str:
    return f"xtag:hold:{connection_id}"


def held_until(connection_id: int | None) -> float | None:
    """Epoch seconds until which X's rate limit for this connection is spent."""
    if connection_id is None:
        return None
    raw = queue.redis_client().get(_hold_key(connection_id))
    until = float(raw) if raw else None
    return until if until and until > time.time() else None


def _hold(connection_id: int, until: float) -> None:
    key = _hold_key(connection_id)
    client_ = queue.redis_client()
    client_.set(key, str(until), exat=int(until) + 1)


class Due(NamedTuple):
    """Pixels whose flush the intake runs when the batch window ends: `later`
    keep the due time they have, if any; `sent` just had full batches sent at
    once, and what those left (under 500, young) is due a window from now."""

    later: frozenset[int] = frozenset()
    sent: frozenset[int] = frozenset()


def schedule_flushes(pixel_keys: set[int]) -> Due:
    """After conversions were buffered: flush at once where 500 wait."""
    if not pixel_keys:
        return Due()
    waiting = dict(
        db.session.execute(
            select(DeliveryItem.pixel_key, func.count())
            .where(DeliveryItem.pixel_key.in_(pixel_keys), DeliveryItem.delivery_id.is_(None))
            .group_by(DeliveryItem.pixel_key)
        ).all()
    )
    sent = frozenset(p for p in pixel_keys if waiting.get(p, 0) >= BATCH_MAX)
    for pixel_key in sent:
        flush(pixel_key)
    return Due(frozenset(pixel_keys) - sent, sent)


def _flag(pixel_key: int) -> str:
    return f"xtag:flush:{pixel_key}"


def flush(pixel_key: int, at: datetime | None = None) -> None:
    """Queue a flush job for a pixel unless one is queued and not yet started
    (that one will take whatever is waiting when it starts)."""
    if queue.redis_client().set(_flag(pixel_key), 1, nx=True, ex=300):
        _enqueue("xtag.jobs.deliver_pixel", at, job_id=None, pixel_key=pixel_key)


def _enqueue(function: str, at: datetime | None, job_id: str | None, **kwargs) -> None:
    """Run now, or at `at` through RQ's scheduler."""
    target = queue.queue(queue.DELIVERIES)
    if at is None or at <= utcnow():
        target.enqueue_call(function, kwargs=kwargs, job_id=job_id, **queue.JOB_DEFAULTS)
    else:
        target.enqueue_at(at, function, job_id=job_id, **kwargs, **queue.JOB_DEFAULTS)


def _retry_later(delivery: Delivery, at: datetime) -> None:
    """Commit the delivery as retrying, then queue its job: queued first, the
    job could run before the commit, find nothing to retry and be lost until
    the sweep finds the retry overdue."""
    delivery.status = "retrying"
    delivery.next_retry_at = at
    metrics.RETRIES_SCHEDULED.inc()
    db.session.commit()
    _enqueue(
        "xtag.jobs.retry_delivery",
        at,
        job_id=f"xtag-retry-{delivery.id}-{delivery.retries}-{int(at.timestamp() * 1000)}",
        delivery_id=delivery.id,
    )


# --- claiming -------------------------------------------------------------------


def claim(pixel_key: int) -> int | None:
    """Move up to 500 waiting conversions of a pixel into a new delivery.

    A short tail (< 500) is only taken once its oldest conversion has waited
    the batch window; otherwise a flush is scheduled for then.
    """
    rows = db.session.execute(
        select(DeliveryItem.id, DeliveryItem.created_at)
        .where(DeliveryItem.pixel_key == pixel_key, DeliveryItem.delivery_id.is_(None))
        .order_by(DeliveryItem.id)
        .limit(BATCH_MAX)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        db.session.rollback()
        return None
    if len(rows) < BATCH_MAX and rows[0].created_at + _window() > utcnow():
        db.session.rollback()  # the worker that buffered these flushes them when due
        return None
    pixel = db.session.get(Pixel, pixel_key)
    delivery = Delivery(pixel_key=pixel_key, connection_id=pixel.connection_id, status="pending")
    db.session.add(delivery)
    db.session.flush()
    taken = db.session.execute(
        update(DeliveryItem)
        .where(DeliveryItem.id.in_([r.id for r in rows]), DeliveryItem.delivery_id.is_(None))
        .values(delivery_id=delivery.id, status="sending")
    ).rowcount
    if not taken:
        db.session.rollback()
        return None
    delivery.conversions = taken
    db.session.commit()
    return delivery.id


def deliver_pixel(pixel_key: int) -> int:
    """Claim and send batches for a pixel until only a young tail waits."""
    queue.redis_client().delete(_flag(pixel_key))
    pixel = db.session.get(Pixel, pixel_key)
    if pixel is None:
        return 0
    held = held_until(pixel.connection_id)
    if held:
        flush(pixel_key, at=datetime.fromtimestamp(held + random.uniform(0, 1), UTC))
        return 0
    sent = 0
    while (delivery_id := claim(pixel_key)) is not None:
        send(delivery_id)
        sent += 1
    return sent


# --- sending --------------------------------------------------------------------


class _Attempt:
    """One delivery's sending state: auth, the HTTP session, and what X said."""

    def __init__(self, delivery: Delivery, connection: Connection):
        self.delivery = delivery
        self.connection = connection
        self.credentials = (
            connections.oauth2_credentials(connection.id)
            if connection.auth_type == "oauth2"
            else connection.credentials
        )
        self.refreshed = False
        config = current_app.config
        self.url = client.conversions_url(
            config["XTAG_X_API_BASE"], config["XTAG_X_API_VERSION"], delivery.pixel.pixel_id
        )
        self.retry: Verdict | None = None

    def post(self, items: list[Item]) -> Verdict:
        body = client.body_of([item.conversion for item in items])
        answer = client.post(
            http(),
            self.url,
            body,
            auth.for_connection(self.connection.auth_type, self.credentials),
            timeout=(5, current_app.config["XTAG_X_TIMEOUT_SECONDS"]),
        )
        verdict = classify(answer.status, answer.headers, answer.body, answer.error)
        metrics.X_REQUESTS.labels(metrics.status_class(answer.status)).inc()
        metrics.X_REQUEST_SECONDS.observe(answer.duration_ms / 1000)
        self.log(items, body, answer, verdict)
        if (
            verdict.kind == "unauthorized"
            and self.connection.auth_type == "oauth2"
            and not self.refreshed
        ):
            self.refreshed = True
            try:
                self.credentials = connections.oauth2_credentials(
                    self.connection.id, rejected_token=self.credentials["access_token"]
                )
            except connections.RefreshFailed as exc:
                return Verdict("unauthorized", str(exc))
            return self.post(items)
        return verdict

    def log(self, items, body: str, answer: client.Answer, verdict: Verdict) -> None:
        delivery = self.delivery
        delivery.attempts += 1
        delivery.last_status_code = answer.status
        delivery.last_error = verdict.message or None
        if verdict.debug_id:
            delivery.debug_id = verdict.debug_id
            delivery.processed = (delivery.processed or 0) + (verdict.processed or len(items))
        db.session.add(
            DeliveryAttempt(
                delivery_id=delivery.id,
                number=delivery.attempts,
                conversions=len(items),
                request_body=body,
                status_code=answer.status,
                response_body=answer.body or None,
                debug_id=verdict.debug_id,
                error=answer.error or (verdict.message if verdict.kind != "delivered" else None),
                duration_ms=answer.duration_ms,
            )
        )
        if verdict.hold_until:
            _hold(self.connection.id, verdict.hold_until)
        fields = {
            "delivery": delivery.id, "pixel": delivery.pixel_key, "attempt": delivery.attempts,
            "conversions": len(items), "status": answer.status, "error": answer.error,
            "ms": answer.duration_ms,
        }  # fmt: skip
        log.info(
            "delivery %s pixel %s: %d conversions -> %s in %d ms",
            delivery.id, delivery.pixel_key, len(items), answer.status or answer.error,
            answer.duration_ms, extra={"fields": fields},
        )  # fmt: skip
        db.session.commit()

    def run(self, items: list[Item]) -> None:
        """Send items; a rejected batch is halved until the bad conversions are alone."""
        verdict = self.post(items)
        pixel = self.delivery.pixel.pixel_id
        if verdict.kind == "delivered":
            _settle([i.id for i in items], "delivered", None)
            metrics.CONVERSIONS_DELIVERED.labels(pixel).inc(len(items))
            connections.mark(self.connection, healthy=True)
        elif verdict.kind == "invalid" and len(items) > 1:
            middle = len(items) // 2
            self.run(items[:middle])
            self.run(items[middle:])
        elif verdict.kind == "invalid":
            _settle([i.id for i in items], "rejected", verdict.message)
            metrics.CONVERSIONS_FAILED.labels(pixel, "rejected").inc(len(items))
        elif verdict.kind == "retry":
            self.retry = verdict
        else:  # 401 / 403 / 404 and other refusals: nothing will change by retrying
            _settle([i.id for i in items], "failed", verdict.message)
            metrics.CONVERSIONS_FAILED.labels(pixel, "refused").inc(len(items))
            connections.mark(self.connection, healthy=False, error=verdict.message)
        db.session.commit()


def _finish(delivery: Delivery, retry: Verdict | None) -> None:
    outstanding = bool(_statuses(delivery.id) & set(OUTSTANDING))
    delays = current_app.config["XTAG_RETRY_DELAYS"]
    if outstanding and retry is not None and delivery.retries < len(delays):
        delay = delays[delivery.retries] * random.uniform(0.8, 1.2)
        at = time.time() + delay
        if retry.retry_at:
            at = max(at, retry.retry_at + random.uniform(0, 1))
        delivery.retries += 1
        retry_at = datetime.fromtimestamp(at, UTC)
        if delivery.attempt_log:
            delivery.attempt_log[-1].next_retry_at = retry_at
        _retry_later(delivery, retry_at)
    else:
        if outstanding:
            given_up = _give_up(delivery.id, retry.message if retry else "not delivered")
            metrics.CONVERSIONS_FAILED.labels(delivery.pixel.pixel_id, "retries").inc(given_up)
        statuses = _statuses(delivery.id)
        if statuses == {"delivered"}:
            delivery.status = "delivered"
        elif "delivered" in statuses:
            delivery.status = "partial"
        else:
            delivery.status = "failed"
        delivery.next_retry_at = None
    db.session.commit()


def _take(delivery: Delivery) -> bool:
    """Mark the delivery as being sent, unless another job got there first
    (a retry fired by RQ's scheduler and by the sweep, say)."""
    taken = db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id, Delivery.status.in_(("pending", "retrying")))
        .values(status="sending", updated_at=utcnow())
    ).rowcount
    db.session.commit()
    db.session.refresh(delivery)
    return bool(taken)


def send(delivery_id: int) -> str:
    """Send a delivery's outstanding conversions; returns its new status."""
    delivery = db.session.get(Delivery, delivery_id)
    if delivery is None or delivery.status in ("delivered", "partial", "failed"):
        return delivery.status if delivery else "missing"
    connection = delivery.pixel.connection
    if connection is None:
        _give_up(delivery.id, "the pixel has no connection to X")
        delivery.last_error = "the pixel has no connection to X"
        _finish(delivery, None)
        return delivery.status
    held = held_until(connection.id)
    if held:
        _retry_later(delivery, datetime.fromtimestamp(held + random.uniform(0, 1), UTC))
        return delivery.status
    if not _take(delivery):
        return delivery.status  # another worker is sending it, or already did
    outstanding = _outstanding(delivery.id)
    try:
        attempt = _Attempt(delivery, connection)
    except connections.RefreshFailed as exc:
        _give_up(delivery.id, str(exc))
        connections.mark(connection, healthy=False, error=str(exc))
        delivery.last_error = str(exc)
        _finish(delivery, None)
        return delivery.status
    if outstanding:
        attempt.run(outstanding)
    _finish(delivery, attempt.retry)
    return delivery.status


def retry_by_hand(delivery_id: int) -> bool:
    """Queue a failed or partial delivery again: its conversions that were not
    rejected by X as invalid are sent once more, with a fresh retry schedule."""
    delivery = db.session.get(Delivery, delivery_id)
    if delivery is None or delivery.status not in ("failed", "partial"):
        return False
    again = [i for i in delivery.items if i.status == "failed"]
    if not again:
        return False
    for item in again:
        item.status, item.error = "sending", None
    delivery.status, delivery.retries = "retrying", 0
    _retry_later(delivery, utcnow())
    return True


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
        _retry_later(delivery, utcnow())
    late = utcnow() - 2 * _window() - timedelta(seconds=1)
    pixels = db.session.scalars(
        select(DeliveryItem.pixel_key)
        .where(DeliveryItem.delivery_id.is_(None), DeliveryItem.created_at < late)
        .distinct()
    ).all()
    db.session.commit()
    for pixel_key in pixels:
        queue.redis_client().delete(_flag(pixel_key))  # its queued job may have died with a worker
        flush(pixel_key)
    return len(stuck) + len(pixels)
