"""The inbox as several streams (XTAG_INBOX_SHARDS): a site's requests keep to
one shard, a worker reads them all, and the crash safety of one stream holds
for each: entries read and not recorded are read again, a dead worker's are
taken over, what cannot be recorded is set aside, and the dead-letter cap
stops every shard."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy.exc import OperationalError

from tests.support import factories
from tests.support.sending import basic, order, queued
from tests.support.shop import events
from tests.support.workers import recording_fails_once
from xtag.pipeline import consuming, inbox, queues

SHARDS = 4


@pytest.fixture
def sharded(app, ctx, make_app):
    """An app (its collector and its worker) with the inbox in four streams,
    and a site on each shard, each with its mapping."""
    other = make_app(XTAG_INBOX_SHARDS=str(SHARDS))
    sites = [factories.site(name=f"Shop {n}") for n in range(SHARDS)]
    for site in sites:
        factories.mapping(site, "Order Completed")
    assert {site.id % SHARDS for site in sites} == set(range(SHARDS))
    return other, sites


def post(app, sites, per_site: int = 5) -> set[str]:
    """Each site's orders, one request each; returns the messageIds."""
    client = app.test_client()
    sent = set()
    for site in sites:
        batch = [order(n, messageId=f"s{site.id}-{n}") for n in range(per_site)]
        answer = client.post("/v1/batch", json={"batch": batch}, headers=basic(site.write_key))
        assert answer.status_code == 200
        sent |= {m["messageId"] for m in batch}
    return sent


def recorded() -> Counter:
    return Counter(e.message_id for e in events())


def pending_entries() -> int:
    client = queues.redis_client()
    return sum(client.xpending(s, inbox.GROUP)["pending"] for s in inbox.streams(SHARDS))


def test_a_site_keeps_to_its_shard_and_every_event_is_recorded_once(sharded):
    app, sites = sharded
    sent = post(app, sites)
    client = queues.redis_client()
    shard_of = {site.id: inbox.streams(SHARDS)[site.id % SHARDS] for site in sites}
    assert {(e.stream, e.events[0]["site_id"]) for e in inbox.peek(client)} == {
        (stream, site_id) for site_id, stream in shard_of.items()
    }
    backlog = inbox.backlog(client)
    assert backlog["depth"] == queued() == SHARDS and backlog["oldest_age_seconds"] >= 0
    assert consuming.Consumer(app, name="w").drain() == SHARDS
    assert recorded() == Counter(sent) and queued() == 0 and pending_entries() == 0


def test_one_shard_is_the_stream_of_old_and_more_shards_still_read_it(app, ctx, sharded):
    sharded_app, sites = sharded
    assert inbox.streams(1) == (inbox.STREAM,)
    sent = post(app, sites[:1])  # queued by a collector of one shard, before a deploy
    assert {e.stream for e in inbox.peek(queues.redis_client())} == {inbox.STREAM}
    consuming.Consumer(sharded_app, name="w").drain()
    assert recorded() == Counter(sent)


def test_a_dead_workers_entries_in_every_shard_are_taken_over(sharded, make_app):
    app, sites = sharded
    sent = post(app, sites)
    client = queues.redis_client()
    inbox.ensure_group(client, inbox.streams(SHARDS))  # as the worker did when it started
    taken = inbox.read(client, "died", 100, None, inbox.streams(SHARDS))
    assert {e.stream for e in taken} == set(inbox.streams(SHARDS))  # then it was SIGKILLed
    quick = make_app(XTAG_INBOX_SHARDS=str(SHARDS), XTAG_INBOX_CLAIM_MS="1")
    consuming.Consumer(quick, name="heir").drain()
    assert recorded() == Counter(sent) and queued() == 0 and pending_entries() == 0


def test_entries_read_before_a_failure_are_read_again_from_every_shard(sharded, monkeypatch):
    app, sites = sharded
    sent = post(app, sites)
    calls = recording_fails_once(monkeypatch)
    consumer = consuming.Consumer(app, name="w")
    with pytest.raises(OperationalError):
        consumer.run_once()
    assert queued() == SHARDS and pending_entries() == SHARDS
    consumer.drain()
    assert calls[1] == calls[0] == set(inbox.streams(SHARDS))  # its own pending entries first
    assert recorded() == Counter(sent) and queued() == 0


def test_what_a_shard_cannot_record_is_set_aside_and_the_cap_stops_every_shard(
    sharded, monkeypatch
):
    app, sites = sharded
    client = queues.redis_client()
    last = sites[-1]
    broken = [{"site_id": last.id, "message": {"type": "track"}}]  # no messageId, no event
    inbox.add(client, broken, shards=SHARDS)
    consuming.Consumer(app, name="w").drain()
    [(_, fields)] = client.xrange(inbox.DEAD)
    assert fields[b"stream"].decode() == inbox.streams(SHARDS)[last.id % SHARDS]
    assert queued() == 0
    monkeypatch.setattr(inbox, "DEAD_MAX", 1)  # at the cap: nothing is read, from any shard
    sent = post(app, sites)
    consuming.Consumer(app, name="w").run_once()
    assert queued() == SHARDS and not events()
    monkeypatch.setattr(inbox, "DEAD_MAX", 10)
    consuming.Consumer(app, name="w").drain()
    assert recorded() == Counter(sent)
    [dead_id] = [d["id"] for d in inbox.dead(client, 10)]
    assert inbox.requeue(client, [dead_id]) == 1  # back into shard 0, read by every worker
    consuming.Consumer(app, name="w").drain()
    assert client.xlen(inbox.DEAD) == 1 and queued() == 0  # still broken: aside again


def test_monitoring_counts_what_waits_in_every_shard(sharded):
    app, sites = sharded
    post(app, sites, per_site=1)  # one request per site, one site per shard
    with app.app_context():
        status = app.test_client().get("/readyz").json
        metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert status["checks"]["redis"]["inbox_depth"] == SHARDS
    assert f"xtag_inbox_depth {float(SHARDS)}" in metrics
