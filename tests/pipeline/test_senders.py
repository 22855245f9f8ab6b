"""A flush job's claims stop when sending cannot go on: after a batch failed
(the job fails; what waits is left for the next job), and while X's rate
limit is spent (the next job runs from the reset). On PostgreSQL batches
are sent several at once, on SQLite one by one: the same rules hold."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from tests.support.sending import order, send
from tests.support.shop import deliveries, items, setup_shop
from xtag.extensions import db
from xtag.models import Connection, Pixel
from xtag.pipeline import batching, consuming, queues, sending


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
        sending._hold(connection_id, time.time() + 30)  # as X's answer to it would say
        return delivery_id

    monkeypatch.setattr(batching, "claim", claim_then_spent)
    batching.deliver_pixel(waiting)
    assert len(deliveries()) == 1  # the others wait for the reset, unclaimed
    assert sum(1 for i in items() if i.delivery_id is None) == 4500
    registry = queues.queue().scheduled_job_registry
    at = [registry.get_scheduled_time(job_id) for job_id in registry.get_job_ids()]
    assert any(t.timestamp() >= time.time() + 25 for t in at)  # the next flush, at the reset
