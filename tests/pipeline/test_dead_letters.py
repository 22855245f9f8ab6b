"""Entries the worker cannot record are set aside, never lost (issue 13):
counted in /metrics, listed for admins with their reason, requeued after a
fix, and at the cap the worker stops reading rather than trim any."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from tests.support import factories
from tests.support.sending import basic, queued, track
from tests.support.shop import events
from tests.support.web import login
from xtag.extensions import db
from xtag.models import AuditEntry
from xtag.pipeline import consuming, inbox, queues


def broken(site_id: int) -> list[dict]:
    return [{"site_id": site_id, "message": {"type": "track"}}]  # no messageId, no event


def test_set_aside_entries_are_listed_and_requeued(app, client, ctx):
    site = factories.site()
    inbox.add(queues.redis_client(), broken(site.id))
    consuming.Consumer(app, name="w").drain()
    assert queues.redis_client().xlen(inbox.DEAD) == 1
    login(client, "admin")
    page = client.get("/dead-letters").get_data(as_text=True)
    assert "KeyError" in page
    assert "inbox_dead_entries 1.0" in client.get("/metrics").get_data(as_text=True)
    r = client.post("/dead-letters/requeue", data={})
    assert r.status_code == 302
    assert queues.redis_client().xlen(inbox.DEAD) == 0 and queued() == 1
    assert db.session.query(AuditEntry).filter_by(action="requeue").count() == 1
    consuming.Consumer(app, name="w").drain()  # still broken: set aside again, not lost
    assert queues.redis_client().xlen(inbox.DEAD) == 1 and queued() == 0


def test_at_the_cap_the_worker_stops_reading_rather_than_lose_one(app, client, ctx, monkeypatch):
    monkeypatch.setattr(inbox, "DEAD_MAX", 2)
    site = factories.site()
    for _ in range(2):
        inbox.add(queues.redis_client(), broken(site.id))
    consuming.Consumer(app, name="w").drain()
    assert queues.redis_client().xlen(inbox.DEAD) == 2
    assert client.post("/v1/track", json=track(), headers=basic(site.write_key)).status_code == 200
    consuming.Consumer(app, name="w").run_once()
    assert queued() == 1 and events() == []  # waiting, not read, not lost
    ready = client.get("/readyz")
    assert ready.status_code == 503 and not ready.json["checks"]["dead_letters"]["ok"]


def queue_with_one_broken(client, count: int, after: int) -> None:
    """`count` good requests (m-0, m-1, ...), and a broken entry after m-`after`."""
    site = factories.site()
    for n in range(count):
        message = {**track(messageId=f"m-{n}"), "type": "track"}
        assert client.post("/v1/batch", json={"batch": [message]}, headers=basic(site.write_key))
        if n == after:
            inbox.add(queues.redis_client(), broken(site.id))


def test_one_bad_entry_among_many_costs_a_few_retries_not_one_per_entry(
    app, client, ctx, monkeypatch
):
    queue_with_one_broken(client, 64, after=40)
    calls = []
    real = consuming.intake.prepare  # the first step of every attempt

    def counted(entries):
        calls.append(len(entries))
        return real(entries)

    monkeypatch.setattr(consuming.intake, "prepare", counted)
    consuming.Consumer(app, name="w").drain()
    assert len(events()) == 64 and queues.redis_client().xlen(inbox.DEAD) == 1
    assert len(calls) <= 1 + 2 * 7  # halving 65 entries down to the bad one, not 65 retries


def test_a_database_failure_while_halving_records_nothing_twice(app, client, ctx, monkeypatch):
    """A bad entry sends a read into halves; the first half is recorded, the
    second meets a database failure. Read again, the first half is not
    recorded a second time."""
    queue_with_one_broken(client, 8, after=1)
    real, halves = consuming.intake.record, []

    def second_half_fails_once(entries):
        halves.append(len(entries))
        if len(entries) == 5 and halves.count(5) == 1:  # 9 entries: halves of 4 and 5
            raise OperationalError("INSERT", {}, Exception("the database went away"))
        return real(entries)

    monkeypatch.setattr(consuming.intake, "record", second_half_fails_once)
    consumer = consuming.Consumer(app, name="w")
    with pytest.raises(OperationalError):
        consumer.run_once()
    consumer.drain()
    recorded = [e.message_id for e in events()]
    assert sorted(recorded) == [f"m-{n}" for n in range(8)]  # each once
    assert queues.redis_client().xlen(inbox.DEAD) == 1 and queued() == 0
