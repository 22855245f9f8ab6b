"""Under a backlog the intake reads its next entries while it records the
last ones. Read ahead, they are this worker's pending entries like any
other: recorded once, read again after a failure, recorded before a stop."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy.exc import OperationalError

from tests.support import factories, pii
from tests.support.sending import basic, order, queued
from tests.support.shop import events
from tests.support.workers import recording_fails_once
from xtag.core.identity import hash_email
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


def test_reads_prepared_ahead_keep_the_order_of_what_visitors_told(app, client, ctx, monkeypatch):
    """The read prepared ahead comes after the read being written: a visitor
    who gave an email in the first is known in the second, and a messageId
    of the first repeated in the second is a duplicate there."""
    monkeypatch.setattr(consuming, "READ_COUNT", READ)
    site = factories.site()
    factories.mapping(site, "Order Completed")
    shopper = "anon-shopper"
    identify = {"anonymousId": shopper, "messageId": "id-1", "traits": {"email": pii.RAW_EMAIL}}
    sent = [("identify", identify)]
    sent += [("track", order(n)) for n in range(2, 6)]
    sent += [("track", order(6, anonymousId=shopper)), ("track", order(2))]  # read 2
    for route, message in sent:
        answer = client.post(f"/v1/{route}", json=message, headers=basic(site.write_key))
        assert answer.status_code == 200
    consumer = consuming.Consumer(app, name="w")
    assert consumer.run_once() == READ and consumer._ahead is not None
    consumer.drain()
    later = {e.message_id: e for e in events()[READ:]}
    assert later["msg-6"].identifiers["hashed_email"] == hash_email(pii.RAW_EMAIL)
    assert later["msg-6"].sources["hashed_email"] == "memory"
    assert (later["msg-2"].outcome, later["msg-2"].reason) == ("dropped", "duplicate")


def test_reading_ahead_never_puts_off_taking_over_a_dead_workers_entries(backlog, make_app):
    quick = make_app(XTAG_INBOX_CLAIM_MS="1")
    consumer = consuming.Consumer(quick, name="w")
    consumer.run_once()  # reads 5, and the next 5 ahead
    died = inbox.read(queues.redis_client(), "died", READ, None)  # then it was SIGKILLed
    consumer._next_reclaim = 0.0  # the time to look for such entries has come
    consumer.run_once()  # records what it read ahead; reads nothing more ahead
    assert consumer._ahead is None
    consumer.run_once()
    assert {e.events[0]["message"]["messageId"] for e in died} <= set(recorded())
