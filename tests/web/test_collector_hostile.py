"""Hostile input to the public collector (issue 13): whatever a request
holds, the answer is a 4xx naming the problem or a 200 for an event that
is then recorded; never a 500, never a 200 for something the worker cannot
store."""

from __future__ import annotations

import json

import pytest

from tests.support import factories
from tests.support.sending import basic, track
from tests.support.shop import events


@pytest.fixture
def site(ctx):
    return factories.site()


def nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    ("message", "named"),
    [
        (track(timestamp="9999-12-31T23:59:59-14:00"), "timestamp"),
        (track(originalTimestamp="0001-01-01T00:00:00+14:00"), "originalTimestamp"),
        (
            track(originalTimestamp="9999-12-30T00:00:00Z", sentAt="0001-01-02T00:00:00Z"),
            "originalTimestamp",
        ),
        (track(properties=nested(900)), "nested deeper than 64 levels"),
        (track(event="P\ud800"), "event holds NUL or a lone surrogate"),
        (track(properties={"name": "a\x00b"}), "properties.name holds NUL"),
        (track(properties={"items": [{"x": "\udfff"}]}), "properties.items[0].x holds"),
        (track(properties={"k\ud800": 1}), "properties has a key with NUL"),
    ],
)
def test_unstorable_input_is_a_400_naming_the_field(client, site, work, message, named):
    body = json.dumps(message)  # lone surrogates travel as \\ud800 escapes, as JS sends them
    r = client.post(
        "/v1/track", data=body, content_type="application/json", headers=basic(site.write_key)
    )
    assert r.status_code == 400, r.json
    assert named in r.json["message"]
    work()
    assert events() == []


def test_a_batch_over_32_kb_with_a_lone_surrogate_refuses_that_message_only(client, site, work):
    big = {**track(properties={"blob": "x" * 40_000, "bad": "\ud800"}), "type": "track"}
    body = json.dumps({"batch": [{**track(), "type": "track"}, big]})
    r = client.post(
        "/v1/batch", data=body, content_type="application/json", headers=basic(site.write_key)
    )
    assert r.status_code == 200, r.json
    assert [x["index"] for x in r.json["refused"]] == [1]
    work()
    assert len(events()) == 1
