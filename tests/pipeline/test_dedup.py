"""MessageId dedup: a repeated messageId for the same site within 48 hours is
forwarded once, a crash never turns an event into a duplicate, and each id
costs Redis a compact hash field, not a key.

The collision bound is in the docstring of xtag/pipeline/dedup.py: a new
messageId is taken for a duplicate only when its 64-bit fingerprint equals
one of the n its site holds (n <= events/s * 54 h): at most n / 2**64, e.g.
1.05e-11 per event for a site at 1,000 events/s, one lost event in about 3
years; `test_the_documented_collision_bound` keeps the constants to it.
"""

from __future__ import annotations

import time

import pytest

from tests.support import factories
from tests.support.sending import basic, track
from tests.support.shop import events
from xtag.extensions import db
from xtag.pipeline import dedup, inbox, intake, queues

HOUR_MS = 3600 * 1000


@pytest.fixture
def redis(app):
    return queues.redis_client(app)


@pytest.fixture
def site(ctx):
    return factories.site()


def entry(at_ms: int, seq: int = 0) -> str:
    """An inbox entry id received at `at_ms`."""
    return f"{at_ms}-{seq}"


def event(message_id: str, site_id: int = 1) -> dict:
    return {"site_id": site_id, "message": {"messageId": message_id}}


def now_ms() -> int:
    return int(time.time() * 1000)


# --- the 48-hour window ---------------------------------------------------------------


def test_repeats_within_48_hours_are_duplicates(redis):
    t = now_ms()
    assert dedup.duplicates(redis, [(entry(t), event("m-1"))]) == [False]
    later = [entry(t + 1), entry(t + 60_000), entry(t + 48 * HOUR_MS - 1)]
    for repeat in later:
        assert dedup.duplicates(redis, [(repeat, event("m-1"))]) == [True]


def test_a_repeat_after_48_hours_is_forwarded_and_opens_a_new_window(redis):
    t = now_ms()
    dedup.duplicates(redis, [(entry(t), event("m-1"))])
    after = t + 48 * HOUR_MS
    assert dedup.duplicates(redis, [(entry(after), event("m-1"))]) == [False]
    assert dedup.duplicates(redis, [(entry(after + HOUR_MS), event("m-1"))]) == [True]


def test_an_earlier_entry_read_after_the_owner_is_the_duplicate(redis):
    t = now_ms()
    dedup.duplicates(redis, [(entry(t), event("m-1"))])
    assert dedup.duplicates(redis, [(entry(t - 5_000), event("m-1"))]) == [True]


def test_sites_are_independent(redis):
    t = now_ms()
    pairs = [(entry(t), event("m-1", 1)), (entry(t, 1), event("m-1", 2))]
    assert dedup.duplicates(redis, pairs) == [False, False]
    assert dedup.duplicates(redis, [(entry(t + 9), event("m-1", 2))]) == [True]
    assert dedup.duplicates(redis, [(entry(t + 9), event("m-2", 1))]) == [False]


def test_the_same_message_id_twice_in_one_batch(redis):
    t = now_ms()
    batch = [(entry(t), event("m-1")), (entry(t), event("m-2")), (entry(t), event("m-1"))]
    assert dedup.duplicates(redis, batch) == [False, False, True]
    # ... and in two entries of one read, however many messageIds lie between them
    read = [(entry(t + 1), event("n-0"))]
    read += [(entry(t + 2, i), event(f"x-{i}")) for i in range(dedup.CHECKS_PER_CALL + 10)]
    read += [(entry(t + 3), event("n-0")), (entry(t + 1), event("n-0"))]
    verdicts = dedup.duplicates(redis, read)
    assert verdicts[0] is False and verdicts[-2:] == [True, True]
    assert not any(verdicts[1:-2])


def in_batch(*message_ids: str) -> dict:
    return {"batch": [track(type="track", messageId=m) for m in message_ids]}


def test_the_collector_route_records_repeats_as_duplicates(client, site, work):
    key = basic(site.write_key)
    batch = in_batch("b-1", "b-2", "b-1")
    assert client.post("/v1/batch", json=batch, headers=key).status_code == 200
    assert client.post("/v1/track", json=track(messageId="b-2"), headers=key).status_code == 200
    work()
    assert [(e.message_id, e.reason) for e in events()] == [
        ("b-1", None),
        ("b-2", None),
        ("b-1", "duplicate"),
        ("b-2", "duplicate"),
    ]


# --- crash safety ---------------------------------------------------------------------


def test_an_entry_read_again_keeps_its_own_message_ids(redis):
    t = now_ms()
    read = [(entry(t), event("m-1")), (entry(t), event("m-1")), (entry(t, 1), event("m-1"))]
    assert dedup.duplicates(redis, read) == [False, True, True]
    assert dedup.duplicates(redis, read) == [False, True, True]  # the worker died; again
    assert dedup.duplicates(redis, read[1:]) == [False, True]  # another worker, part of it


def test_a_crash_between_dedup_and_commit_keeps_events_forwarded(
    client, site, work, redis, monkeypatch
):
    """The worker claimed the messageIds, then died before its commit: the
    entry, read again, records them as forwarded, not duplicates."""
    key = basic(site.write_key)
    client.post("/v1/batch", json=in_batch("c-1", "c-2", "c-1"), headers=key)
    [first] = inbox.peek(redis)

    def crash() -> None:
        raise RuntimeError("killed before the commit")

    with monkeypatch.context() as m:
        m.setattr(db.session, "commit", crash)
        with pytest.raises(RuntimeError):
            intake.record([first])
    db.session.rollback()
    client.post("/v1/track", json=track(messageId="c-2"), headers=key)  # a real repeat
    [_, repeat] = inbox.peek(redis)
    assert dedup.duplicates(redis, [(repeat.id, repeat.events[0])]) == [True]
    work()
    assert [(e.message_id, e.reason) for e in events()] == [
        ("c-1", None),
        ("c-2", None),
        ("c-1", "duplicate"),
        ("c-2", "duplicate"),
    ]


# --- how the claims are kept ----------------------------------------------------------


def test_claims_stay_compact_and_none_is_forgotten(redis):
    """Many claims at once: every slot stays a listpack of at most 128 fields,
    full slots open new segments, and every claim is still found."""
    t = now_ms()
    ids = [f"many-{i}" for i in range(3000)]
    first = [(entry(t + i // 100, i % 100), event(m)) for i, m in enumerate(ids)]
    assert not any(dedup.duplicates(redis, first))
    meta = redis.hgetall("xtag:dedup:1")
    assert len(meta) > 3  # 'c' and several segments
    slots = [k for k in redis.scan_iter("xtag:dedup:1:*")]
    assert slots
    for key in slots:
        assert redis.object("encoding", key) in (b"listpack", b"ziplist")
        assert redis.hlen(key) <= dedup.SLOT_MAX
    again = [(entry(t + 60_000), event(m)) for m in ids]
    assert all(dedup.duplicates(redis, again))


def test_slots_are_kept_48_hours_from_their_last_claim(redis):
    dedup.duplicates(redis, [(entry(now_ms()), event("m-1"))])
    slot = dedup.dedup_key(1, "m-1", redis)
    assert dedup.DEDUP_SECONDS - 60 < redis.ttl(slot) <= dedup.DEDUP_SECONDS
    assert redis.ttl("xtag:dedup:1") > dedup.DEDUP_SECONDS + dedup.SPAN_SECONDS
    assert dedup.dedup_key(1, "never-seen", redis) is None


def test_a_segment_open_for_its_span_hands_over_to_one_sized_for_its_rate(redis):
    t = now_ms()
    dedup.duplicates(redis, [(entry(t, i), event(f"s-{i}")) for i in range(100)])
    meta = {k.decode(): v.decode() for k, v in redis.hgetall("xtag:dedup:1").items()}
    n, slots, started = max(
        (int(k), *map(int, v.split(":")[:2])) for k, v in meta.items() if k != "c"
    )
    # as if the open segment had taken 3,200 claims over a span
    redis.hset("xtag:dedup:1", mapping={n: f"{slots}:{started - dedup.SPAN_SECONDS}:0", "c": 3200})
    dedup.duplicates(redis, [(entry(t + 1), event("next"))])
    meta = {k.decode(): v.decode() for k, v in redis.hgetall("xtag:dedup:1").items()}
    assert meta[str(n + 1)].split(":")[0] == str(min(3200 // dedup.SLOT_FILL, 4 * slots))
    assert meta[str(n + 1)].endswith(":0") and not meta[str(n)].endswith(":0")
    assert dedup.duplicates(redis, [(entry(t + 2), event("s-7"))]) == [True]


def test_the_documented_collision_bound():
    fp, idx = dedup.fingerprint("m-1")
    assert -(2**63) <= fp < 2**63 and 0 <= idx < 2**32
    held = 1000 * (dedup.DEDUP_SECONDS + dedup.SPAN_SECONDS)  # a site at 1,000/s
    per_event = held / 2**64
    assert per_event < 1.1e-11
    assert 1 / (per_event * 1000 * 86400 * 365) > 3  # years between two false duplicates
