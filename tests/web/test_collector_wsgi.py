"""The collector's routes that take events are a plain WSGI callable
(xtag.collector.wsgi) in front of its Flask app: what a sender notices of
that, at the edges Flask used to handle (routing, streaming bodies, odd
queries), and of the shortcuts its parsing takes."""

from __future__ import annotations

import io
import json

import pytest

from tests.support import factories
from tests.support.sending import basic, queued, track
from tests.support.shop import events


@pytest.fixture
def site(ctx):
    return factories.site()


def test_an_integer_beyond_64_bits_is_kept_to_the_last_digit(client, site, work):
    body = b'{"event": "Big", "anonymousId": "a", "properties": {"n": 12345678901234567890123}}'
    r = client.post(
        "/v1/track", data=body, content_type="application/json", headers=basic(site.write_key)
    )
    assert r.status_code == 200
    work()
    [event] = events()
    assert event.message["properties"]["n"] == 12345678901234567890123


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"event": "P\xed\xa0\x80", "anonymousId": "a"}', "event holds NUL or a lone surrogate"),
        (json.dumps(track(properties={"k": "a\x00b"})).encode(), "properties.k holds NUL"),
        ('{"event": "P\\ud800", "anonymousId": "a"}'.encode("utf-16"), "event holds NUL"),
    ],
    ids=["raw-utf8-surrogate", "escaped-nul", "utf16-escaped-surrogate"],
)
def test_unstorable_text_is_refused_however_it_is_encoded(client, site, body, named):
    r = client.post(
        "/v1/track", data=body, content_type="application/json", headers=basic(site.write_key)
    )
    assert r.status_code == 400 and named in r.json["message"]
    assert queued() == 0


def nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels):
        value = {"n": value}
    return value


def test_a_batch_refuses_only_its_message_nested_too_deep(client, site, work):
    # many messages: more brackets in the body than any one message may nest
    shallow = [
        {**track(messageId=f"m-{i}", properties=nested(3)), "type": "track"} for i in range(30)
    ]
    deep = {**track(messageId="deep", properties=nested(70)), "type": "track"}
    r = client.post("/v1/batch", json={"batch": [*shallow, deep]}, headers=basic(site.write_key))
    assert r.status_code == 200
    [refused] = r.json["refused"]
    assert refused["index"] == 30 and "nested deeper than 64 levels" in refused["error"]
    work()
    assert len(events()) == 30


def test_a_write_key_query_that_is_not_utf8_is_a_401_not_a_500(client, site):
    r = client.post(
        "/v1/track",
        json=track(),
        environ_overrides={"QUERY_STRING": "writeKey=\xff\xfe"},
    )
    assert (r.status_code, r.json["code"]) == (401, "unauthorized")


def test_a_chunked_body_is_read(client, site):
    """gunicorn ends a chunked body for the app (wsgi.input_terminated)."""
    r = client.post(
        "/v1/track",
        input_stream=io.BytesIO(json.dumps(track()).encode()),
        headers={**basic(site.write_key), "Transfer-Encoding": "chunked"},
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert r.status_code == 200
    assert queued() == 1


def test_a_wrong_method_a_doubled_slash_and_head_answer_as_routing_did(client, site):
    r = client.put("/v1/batch", json={}, headers={"Origin": "https://shop.example"})
    assert (r.status_code, r.json["code"]) == (405, "invalid") and r.json["message"]
    assert "Access-Control-Allow-Origin" not in r.headers
    r = client.head("/beacon/v1/batch")
    assert r.status_code == 405 and r.data == b""
    r = client.post("/v1//track", json=track(), headers=basic(site.write_key))
    assert r.status_code == 308 and r.headers["Location"].endswith("/v1/track")
    r = client.post("/v1/track/", json=track(), headers=basic(site.write_key))
    assert (r.status_code, r.json["code"]) == (404, "not_found")
    assert queued() == 0


def test_the_settings_routes_stay_with_their_preflight(client, site):
    r = client.options(
        f"/v1/projects/{site.write_key}/settings",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"},
    )
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"]
    assert client.get(f"/v1/projects/{site.write_key}/settings").status_code == 200


def test_a_failure_of_the_collector_itself_is_a_500_sdks_can_parse(make_app, ctx, monkeypatch):
    from xtag.collector import wsgi

    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    site = factories.site(name="broken")

    def broken(*_):
        raise RuntimeError("a bug")

    monkeypatch.setattr(wsgi, "prepare", broken)
    r = app.test_client().post("/v1/track", json=track(), headers=basic(site.write_key))
    assert r.status_code == 500
    assert r.json["code"] == "invalid" and r.json["message"] == r.json["error"]
