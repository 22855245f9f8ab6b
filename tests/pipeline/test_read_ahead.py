"""Under a backlog the intake reads its next entries while it records the
last ones. Read ahead, they are this worker's pending entries like any
other: recorded once, read again after a failure, recorded before a stop."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy.exc import OperationalError

from tests.support import factories
from tests.support.sending import basic, order, queued
from tests.support.shop import events
from tests.support.workers import recording_fails_once
from xtag.pipeline import consuming, inbox, queues

READ = 5


@pytest.fixture
def backlog(app, client, ctx, monkeypatch):
    """17 beacons (one event each) waiting, reads of READ entries."""
    monkeypatch.setattr(consuming, "READ_COUNT", READ)
    site = factories.site()
    factories.mapping(site, "Order Completed")
    sent = []
    for n in range(17):
        answer = client.post("/v1/track", json=order(n), headers=basic(site.write_key))
        assert answer.status_code == 200
        sent.append(f"msg-{n}")
    return Counter(sent)


def recorded() -> Counter:
    return Counter(e.message_id for e in events())


def pending() -> int:
    return queues.redis_client().xpending(inbox.STREAM, inbox.GROUP)["pending"]


def test_a_full_read_reads_the_next_while_it_records(app, backlog):
    consumer = consuming.Consumer(app, name="w")
    assert consumer.run_once() == READ
    consumer._ahead.result()  # the next read, made while the first was recorded
    assert len(recorded()) == READ and pending() == READ and queued() == 17 - READ
    assert consumer.drain() == 17 - READ
    assert recorded() == backlog and queued() == 0 and pending() == 0


def test_what_was_read_ahead_of_a_failure_is_recorded_once(app, backlog, monkeypatch):
    recording_fails_once(monkeypatch)
    consumer = consuming.Consumer(app, name="w")
    with pytest.raises(OperationalError):
        consumer.run_once()
    consumer._ahead.result()
    assert pending() == 2 * READ  # the failed read and the one read ahead
    consumer.drain()
    assert recorded() == backlog and queued() == 0 and pending() == 0


def test_a_stopping_worker_records_what_it_read_ahead(app, backlog):
    consumer = consuming.Consumer(app, name="w")
    consumer.run_once()
    consumer.stop.set()
    consumer.run_forever()  # returns at once: stopped, after recording the read ahead
    assert len(recorded()) == 2 * READ and pending() == 0 and queued() == 17 - 2 * READ
