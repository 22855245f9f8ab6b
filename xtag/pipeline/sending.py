"""Sending a delivery to X: sign it, post it, read X's answer, halve a batch
X rejects until the bad conversions stand alone, pace by X's rate limits,
retry what can be retried and log every attempt."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import NamedTuple

import redis
import requests
from flask import current_app
from sqlalchemy import BigInteger, ColumnElement, Text, any_, cast, func, literal, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from xtag.core.x_answers import Verdict, believable, classify
from xtag.extensions import db
from xtag.models import Connection, Delivery, DeliveryAttempt, DeliveryItem, utcnow
from xtag.pipeline import counters, credentials, pacing, queues
from xtag.x_api import auth, client, oauth, timeout

log = logging.getLogger(__name__)

OUTSTANDING = ("sending",)
# Batches of one pixel that one job sends at once, on PostgreSQL (claims skip
# each other's locked rows). X answers a batch in 100-300 ms: one at a time,
# a worker could not send more than a few thousand conversions a second,
# whatever its CPU. SQLite writes one transaction at a time: one sender.
SENDERS = 4
RETRY_JOB = "xtag.pipeline.jobs.retry_delivery"

_local = threading.local()  # a requests session per sender thread (SENDERS)


class Item(NamedTuple):
    """A conversion being sent: its row id and the conversion's JSON as stored
    (plain rows, not ORM objects: a batch is 500 of them). Never parsed here:
    reading and writing 500 conversions again cost the worker a tenth of its
    time, to send what the intake had already written as JSON."""

    id: int
    conversion: str


def body_from(items: list[Item]) -> str:
    """client.body_of of the items' conversions, from their stored JSON (which
    the JSON columns' serialiser wrote: the same text body_of would)."""
    return '{"conversions":[' + ",".join(item.conversion for item in items) + "]}"


def ids_in(column, ids: list[int]) -> ColumnElement[bool]:
    """`column IN ids`, for hundreds of ids: on PostgreSQL one array parameter,
    so the statement stays short (psycopg parses a long one anew each time)."""
    if db.session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(ids, ARRAY(BigInteger)))
    return column.in_(ids)


def _outstanding(delivery_id: int) -> list[Item]:
    items = DeliveryItem.__table__.c  # Core columns: plain rows, no ORM loading
    rows = db.session.execute(
        select(items.id, cast(items.conversion, Text))
        .where(items.delivery_id == delivery_id, items.status.in_(OUTSTANDING))
        .order_by(items.id)
    )
    return [Item(*row) for row in rows]


def _settle(ids: list[int], status: str, error: str | None) -> None:
    db.session.execute(
        update(DeliveryItem.__table__)
        .where(ids_in(DeliveryItem.id, ids))
        .values(status=status, error=error)
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


def senders() -> int:
    """How many batches of a pixel are sent at once here (SENDERS)."""
    return SENDERS if db.session.get_bind().dialect.name == "postgresql" else 1


def http() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


# --- retrying ----------------------------------------------------------------


def retry_later(delivery: Delivery, at: datetime) -> None:
    """Commit the delivery as retrying, then queue its job: queued first, the
    job could run before the commit, find nothing to retry and be lost until
    the sweep finds the retry overdue."""
    delivery.status = "retrying"
    delivery.next_retry_at = at
    counters.RETRIES_SCHEDULED.inc()
    db.session.commit()
    queues.enqueue(
        RETRY_JOB,
        at,
        job_id=f"xtag-retry-{delivery.id}-{delivery.retries}-{int(at.timestamp() * 1000)}",
        delivery_id=delivery.id,
    )


# --- sending ------------------------------------------------------------------


class _Attempt:
    """One delivery's sending state: auth, the HTTP session, and what X said."""

    def __init__(self, delivery: Delivery, connection: Connection):
        self.delivery = delivery
        self.connection = connection
        self.credentials = (
            credentials.oauth2_credentials(connection.id)
            if connection.auth_type == "oauth2"
            else connection.credentials
        )
        self.refreshed = False
        config = current_app.config
        self.url = client.conversions_url(
            config["XTAG_X_API_BASE"], config["XTAG_X_API_VERSION"], delivery.pixel.pixel_id
        )
        self.retry: Verdict | None = None
        self.delivered = 0  # conversions X took in this run

    def post(self, items: list[Item]) -> Verdict:
        """Post the items, unless the connection is held (pacing): requests
        sent beside this one since it was claimed may have taken what was
        left of X's budget. Then nothing is posted and the verdict is `held`."""
        ticket = uuid.uuid4().hex
        held = pacing.posting(self.connection.id, ticket)
        if held:
            return Verdict("held", HELD, retry_at=held)
        body = body_from(items)
        answer = client.Answer(None, {}, "", 0, "not sent")  # should signing raise
        try:
            answer = client.post(
                http(),
                self.url,
                body,
                auth.for_connection(self.connection.auth_type, self.credentials),
                timeout=timeout(current_app.config["XTAG_X_TIMEOUT_SECONDS"]),
            )
        finally:
            self.paced(ticket, answer)
        verdict = classify(answer.status, answer.headers, answer.body, answer.error)
        counters.X_REQUESTS.labels(counters.status_class(answer.status)).inc()
        counters.X_REQUEST_SECONDS.observe(answer.duration_ms / 1000)
        self.log(items, body, answer, verdict)
        if (
            verdict.kind == "unauthorized"
            and self.connection.auth_type == "oauth2"
            and not self.refreshed
        ):
            self.refreshed = True
            try:
                self.credentials = credentials.oauth2_credentials(
                    self.connection.id, rejected_token=self.credentials["access_token"]
                )
            except oauth.RefreshFailed as exc:
                return Verdict("unauthorized", str(exc))
            return self.post(items)
        return verdict

    def paced(self, ticket: str, answer: client.Answer) -> None:
        """What X said of the connection's budget, kept for pacing. If Redis
        fails here, X's answer must still be recorded (else the batch would
        be swept and sent again): the request then counts as in flight until
        pacing forgets it."""
        try:
            pacing.answered(self.connection.id, ticket, answer)
        except redis.RedisError as exc:
            log.warning("connection %s: X's rate limit not kept: %s", self.connection.id, exc)

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
        if verdict.kind != "delivered":  # else committed with the conversions' fate
            db.session.commit()

    def run(self, items: list[Item], half: bool = False) -> None:
        """Send items; a rejected batch is halved until the bad conversions are alone.
        A half's fate is committed before the next half is posted; the whole
        batch's, with the delivery's status (_finish)."""
        verdict = self.post(items)
        pixel = self.delivery.pixel.pixel_id
        if verdict.kind == "delivered":
            _settle([i.id for i in items], "delivered", None)
            self.delivered += len(items)
            counters.CONVERSIONS_DELIVERED.labels(pixel).inc(len(items))
            credentials.mark(self.connection, healthy=True)
        elif verdict.kind == "invalid" and len(items) > 1:
            middle = len(items) // 2
            self.run(items[:middle], half=True)
            self.run(items[middle:], half=True)
        elif verdict.kind == "invalid":
            _settle([i.id for i in items], "rejected", verdict.message)
            counters.CONVERSIONS_FAILED.labels(pixel, "rejected").inc(len(items))
        elif verdict.kind in ("retry", "held"):
            self.retry = _later(self.retry, verdict)
        else:  # 401 / 403 / 404 and other refusals: nothing will change by retrying
            _settle([i.id for i in items], "failed", verdict.message)
            counters.CONVERSIONS_FAILED.labels(pixel, "refused").inc(len(items))
            credentials.mark(self.connection, healthy=False, error=verdict.message)
        if half:
            db.session.commit()


HELD = "X's rate limit for the connection is spent"


def _later(kept: Verdict | None, new: Verdict) -> Verdict:
    """One retry for the halves of a batch: a posted half's (it spends a
    retry, and its error is the one to show) over a held one's, at the
    latest time either asked for."""
    if kept is None:
        return new
    chosen = new if kept.kind == "held" else kept
    times = [v.retry_at for v in (kept, new) if v.retry_at]
    return replace(chosen, retry_at=max(times, default=None))


def _wait_for_reset(delivery: Delivery, reset: float) -> None:
    delivery.last_error = f"{HELD}; sent again at its reset"
    retry_later(delivery, datetime.fromtimestamp(reset + random.uniform(0, 1), UTC))


def _finish(delivery: Delivery, retry: Verdict | None, statuses: set[str] | None = None) -> None:
    """The delivery's status from its conversions' (`statuses` when the caller
    knows them), or its retry."""
    outstanding = bool((statuses or _statuses(delivery.id)) & set(OUTSTANDING))
    delays = current_app.config["XTAG_RETRY_DELAYS"]
    if outstanding and retry is not None and retry.kind == "held" and retry.retry_at:
        _wait_for_reset(delivery, retry.retry_at)  # never posted: no retry spent
    elif outstanding and retry is not None and delivery.retries < len(delays):
        delay = delays[delivery.retries] * random.uniform(0.8, 1.2)
        at = time.time() + delay
        if retry.retry_at:
            at = max(at, believable(retry.retry_at, time.time()) + random.uniform(0, 1))
        delivery.retries += 1
        retry_at = datetime.fromtimestamp(at, UTC)
        if delivery.attempt_log:
            delivery.attempt_log[-1].next_retry_at = retry_at
        retry_later(delivery, retry_at)
    else:
        if outstanding:
            given_up = _give_up(delivery.id, retry.message if retry else "not delivered")
            counters.CONVERSIONS_FAILED.labels(delivery.pixel.pixel_id, "retries").inc(given_up)
        statuses = statuses or _statuses(delivery.id)
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


TEST_NOTE = "test mode: recorded, not sent to X"


def _record_test(delivery: Delivery) -> None:
    """A test batch: the exact request X would get, logged as its one attempt."""
    items = db.session.execute(
        select(DeliveryItem.conversion)
        .where(DeliveryItem.delivery_id == delivery.id)
        .order_by(DeliveryItem.id)
    ).scalars()
    conversions = list(items)
    delivery.last_error = TEST_NOTE
    db.session.add(
        DeliveryAttempt(
            delivery_id=delivery.id,
            number=1,
            conversions=len(conversions),
            request_body=client.body_of(conversions),
            error=TEST_NOTE,
            duration_ms=0,
        )
    )
    db.session.commit()
    log.info(
        "delivery %s pixel %s: %d test conversions recorded, not sent",
        delivery.id, delivery.pixel_key, len(conversions),
        extra={"fields": {"delivery": delivery.id, "pixel": delivery.pixel_key, "test": True}},
    )  # fmt: skip


def send(delivery_id: int, claimed: bool = False) -> str:
    """Send a delivery's outstanding conversions; returns its new status.
    A test delivery is recorded with the request it would be, never sent.
    `claimed`: batching.claim just made it, as `sending`, for this job."""
    delivery = db.session.get(Delivery, delivery_id)
    if delivery is None or delivery.status in ("delivered", "partial", "failed"):
        return delivery.status if delivery else "missing"
    if delivery.status == "test":
        if not delivery.attempt_log:
            _record_test(delivery)
        return delivery.status
    connection = delivery.pixel.connection
    if connection is None:
        _give_up(delivery.id, "the pixel has no connection to X")
        delivery.last_error = "the pixel has no connection to X"
        _finish(delivery, None)
        return delivery.status
    if not claimed and not _take(delivery):
        return delivery.status  # another worker is sending it, or already did
    held = pacing.held_until(connection.id)
    if held:
        _wait_for_reset(delivery, held)
        return delivery.status
    outstanding = _outstanding(delivery.id)
    try:
        attempt = _Attempt(delivery, connection)
    except oauth.RefreshFailed as exc:
        _give_up(delivery.id, str(exc))
        credentials.mark(connection, healthy=False, error=str(exc))
        delivery.last_error = str(exc)
        _finish(delivery, None)
        return delivery.status
    if outstanding:
        attempt.run(outstanding)
    every = claimed and outstanding and attempt.delivered == len(outstanding)
    _finish(delivery, attempt.retry, {"delivered"} if every else None)  # a query less
    return delivery.status
