"""A flush job's claims stop when sending cannot go on: after a batch failed
(the job fails; what waits is left for the next job), and while X's rate
limit is spent (the next job runs from the reset). On PostgreSQL batches
are sent several at once, on SQLite one by one: the same rules hold."""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import select

from tests.support.sending import order, send
from tests.support.shop import PIXEL, deliveries, items, setup_shop
from xtag.extensions import db
from xtag.models import Connection, Pixel
from xtag.pipeline import batching, consuming, pacing, queues, sending
from xtag.x_api import client as client_api


@pytest.fixture
def waiting(x_app, client, ctx, fake_x) -> int:
    """Ten batches of conversions recorded and waiting for one pixel; its key."""
    site = setup_shop(fake_x)
    send(client, site, [order(n) for n in range(5000)])
    consuming.Consumer(x_app, name="w").drain()
    assert len(items()) == 5000 and not deliveries()
    return db.session.scalar(select(Pixel.id))


def test_after_a_batch_failed_no_more_are_claimed(waiting, monkeypatch):
    real, sent = batching.send, []

    def first_fails(delivery_id: int, claimed: bool = False) -> str:
        sent.append(delivery_id)
        if len(sent) == 1:
            raise RuntimeError("the database went away while recording X's answer")
        return real(delivery_id, claimed=claimed)

    monkeypatch.setattr(batching, "send", first_fails)
    with pytest.raises(RuntimeError, match="went away"):
        batching.deliver_pixel(waiting)
    assert 1 <= len(deliveries()) <= sending.SENDERS  # at most those already being sent
    assert sum(1 for i in items() if i.delivery_id is None) >= 5000 - 500 * sending.SENDERS


def test_a_rate_limit_spent_during_the_job_stops_its_claims(waiting, monkeypatch):
    connection_id = db.session.scalar(select(Connection.id))
    real = batching.claim

    def claim_then_spent(pixel_key: int) -> int | None:
        delivery_id = real(pixel_key)
        spend(connection_id, time.time() + 30)  # as an answer to another batch would say
        return delivery_id

    monkeypatch.setattr(batching, "claim", claim_then_spent)
    batching.deliver_pixel(waiting)
    [held] = deliveries()  # the others wait for the reset, unclaimed
    assert held.status == "retrying" and held.attempts == held.retries == 0
    assert held.last_error == "X's rate limit for the connection is spent; sent again at its reset"
    assert sum(1 for i in items() if i.delivery_id is None) == 4500
    registry = queues.queue().scheduled_job_registry
    at = [registry.get_scheduled_time(job_id) for job_id in registry.get_job_ids()]
    assert any(t.timestamp() >= time.time() + 25 for t in at)  # the next flush, at the reset


def test_a_batch_held_after_its_claim_waits_for_the_reset_and_spends_no_retry(
    x_app, client, ctx, fake_x, deliver, monkeypatch
):
    """A batch beside this one spent X's budget after this one was claimed:
    it is not posted into a 429 but sent at the reset, with no attempt logged
    for the wait and its retries untouched."""
    site = setup_shop(fake_x)
    connection_id = db.session.scalar(select(Connection.id))
    real, reset = sending._outstanding, time.time() + 2

    def read_then_spent(delivery_id: int) -> list[sending.Item]:
        outstanding = real(delivery_id)
        if time.time() < reset:
            spend(connection_id, reset)  # as the answer to a batch beside it would
        return outstanding

    monkeypatch.setattr(sending, "_outstanding", read_then_spent)
    send(client, site, [order(n) for n in range(3)])
    deliver()
    [request] = fake_x.calls()
    assert request.status == 200 and request.received_at >= reset
    [sent] = deliveries()
    assert (sent.status, sent.attempts, sent.retries, sent.last_error) == ("delivered", 1, 0, None)


def test_what_may_start_is_what_x_says_remains_less_the_requests_in_flight(x_app, ctx):
    """Three requests in flight; X answers the first: 4 remain. Two others
    are still in flight and may not have been counted: two more may start,
    the third waits for the reset, in this process or any other."""
    connection_id, reset = 10**9, int(time.time()) + 30  # no connection of another test
    assert [pacing.posting(connection_id, t) for t in "abc"] == [None, None, None]
    pacing.answered(connection_id, "a", answer(200, remaining=4, reset=reset))
    assert pacing.held_until(connection_id) is None
    assert [pacing.posting(connection_id, t) for t in "def"] == [None, None, reset]
    assert pacing.held_until(connection_id) == reset
    # an answer read late says more remained: it does not give back what was taken
    pacing.answered(connection_id, "b", answer(200, remaining=5, reset=reset))
    assert pacing.posting(connection_id, "g") == reset


def answer(status: int, remaining: int, reset: float) -> client_api.Answer:
    headers = {"x-rate-limit-remaining": str(remaining), "x-rate-limit-reset": str(reset)}
    return client_api.Answer(status, headers, "{}", 5)


def spend(connection_id: int, reset: float) -> None:
    """X's budget for the connection is spent until reset, as a 429 says."""
    pacing.answered(connection_id, "429", answer(429, remaining=0, reset=reset))


def test_a_half_that_failed_keeps_its_retry_when_the_next_half_is_held(
    x_app, client, ctx, fake_x, deliver
):
    """X rejects a batch (400), answers its first half 503 saying no request
    remains, so the second half is not posted: the delivery spends a retry
    for the 503, shows X's error, and goes again at the reset."""
    site = setup_shop(fake_x)
    send(client, site, [order(n) for n in range(500)])  # one full batch: sent at once
    consuming.Consumer(x_app, name="w").drain()
    reset = int(time.time()) + 3
    fake_x.fail_next(400)
    spent = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)}
    fake_x.fail_next(503, headers=spent)
    batching.deliver_pixel(db.session.scalar(select(Pixel.id)))
    assert [c.status for c in fake_x.calls()] == [400, 503]
    [waiting] = deliveries()
    assert (waiting.status, waiting.retries, waiting.attempts) == ("retrying", 1, 2)
    assert waiting.last_error.startswith("HTTP 503")
    assert waiting.next_retry_at.timestamp() >= reset
    deliver()
    assert len(fake_x.accepted(PIXEL)) == 500 and deliveries()[0].status == "delivered"


def test_x_answer_is_recorded_even_when_redis_fails_to_keep_the_rate_limit(
    x_app, client, ctx, fake_x, deliver, monkeypatch
):
    def redis_gone(*args):
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(pacing, "answered", redis_gone)
    site = setup_shop(fake_x)
    send(client, site, [order(1)])
    deliver()
    [sent] = deliveries()
    assert (sent.status, sent.attempts) == ("delivered", 1)
    assert [c.status for c in fake_x.calls()] == [200]  # never sent twice


def test_a_duplicate_retry_leaves_alone_a_delivery_another_worker_is_sending(
    x_app, client, ctx, fake_x
):
    """RQ's scheduler and the sweep may both fire a delivery's retry: while
    X's budget is spent, the late one must not mark a delivery that another
    worker is sending as waiting."""
    site = setup_shop(fake_x)
    send(client, site, [order(n) for n in range(500)])
    consuming.Consumer(x_app, name="w").drain()
    delivery_id = batching.claim(db.session.scalar(select(Pixel.id)))  # being sent elsewhere
    spend(db.session.scalar(select(Connection.id)), time.time() + 30)
    assert sending.send(delivery_id) == "sending"
    db.session.expire_all()
    assert deliveries()[0].status == "sending"
