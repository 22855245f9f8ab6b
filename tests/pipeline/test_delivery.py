"""Events accepted by the collector reach a fake X on loopback as valid,
hashed, signed, batched conversions; every status of the spec's table."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from tests.support import pii
from tests.support.sending import order, send
from tests.support.shop import CREDENTIALS, EVENT, PIXEL, deliveries, items, setup_shop
from xtag.core.errors import Conflict
from xtag.core.identity import hash_email, hash_phone
from xtag.extensions import db
from xtag.models import Connection, Mapping, Pixel, ReceivedEvent
from xtag.pipeline import batching, consuming, credentials
from xtag.services import deliveries as retrying
from xtag.x_api import client as client_api

# --- the happy path for each auth type -------------------------------------------


@pytest.mark.parametrize("auth_type", ["pixel_token", "oauth1", "oauth2"])
def test_events_reach_x_as_valid_signed_conversions(x_app, client, ctx, fake_x, deliver, auth_type):
    site = setup_shop(fake_x, auth_type)
    identified = order(
        1,
        traits={"email": pii.RAW_EMAIL},
        context={"traits": {"phone": pii.RAW_PHONE_LOCAL}, "ip": "203.0.113.9", "twclid": "tw-1"},
    )
    send(client, site, [identified, order(2)])
    deliver()
    [request] = fake_x.calls()
    assert request.status == 200 and request.authenticated
    assert request.auth == {"oauth2": "bearer"}.get(auth_type, auth_type)
    first, second = request.conversions
    assert first["event_id"] == EVENT and first["conversion_id"] == "order-1"
    assert first["value"] == "20.00" and first["price_currency"] == "EUR"
    assert first["identifiers"][:3] == [
        {"twclid": "tw-1"},
        {"hashed_email": hash_email(pii.RAW_EMAIL)},
        {"hashed_phone_number": hash_phone(pii.RAW_PHONE_E164)},
    ]
    assert first["identifiers"][3]["ip_address"] == "203.0.113.9"
    assert second["identifiers"][0] == {"twclid": "tw-2"}
    [sent] = deliveries()
    assert (sent.status, sent.conversions, sent.attempts, sent.processed) == ("delivered", 2, 1, 2)
    assert sent.debug_id == request.response_json["data"]["debug_id"]
    assert {i.status for i in items()} == {"delivered"}
    outcomes = {(e.outcome, tuple(e.pixels)) for e in db.session.scalars(select(ReceivedEvent))}
    assert outcomes == {("forwarded", (PIXEL,))}
    assert (
        sent.attempt_log[0].status_code == 200
        and "hashed_email" in sent.attempt_log[0].request_body
    )


def test_x_gets_the_stored_conversions_exactly(x_app, client, ctx, fake_x, deliver):
    """The conversions are sent as the intake stored them, not parsed and written
    again: the body is still what body_of makes of them, odd characters
    included (from 20 rows PostgreSQL takes them by COPY, which escapes)."""
    site = setup_shop(fake_x)
    name = 'Crème "brûlée" \\ a\ttab, a\nline ☕'
    product = {"product_id": "p-1", "name": name, "price": 3.5, "quantity": 2}
    send(
        client,
        site,
        [order(n, properties={"order_id": f"o-{n}", "products": [product]}) for n in range(25)],
    )
    deliver()
    [request] = fake_x.calls()
    assert [c["contents"][0]["content_name"] for c in request.conversions] == [name] * 25
    [sent] = deliveries()
    stored = [i.conversion for i in items()]
    assert sent.attempt_log[0].request_body == client_api.body_of(stored)


def test_1200_events_make_three_requests_of_at_most_500(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    send(client, site, [order(n) for n in range(1200)])
    deliver()
    sizes = sorted(len(r.conversions) for r in fake_x.calls())
    assert sizes == [200, 500, 500]
    assert len(fake_x.accepted(PIXEL)) == 1200
    assert len({c["conversion_id"] for c in fake_x.accepted()}) == 1200


def test_a_backlog_is_sent_several_batches_at_once(x_app, client, ctx, fake_x, deliver):
    """X takes a while to answer each batch; on PostgreSQL a pixel's backlog
    does not wait for each answer before the next batch goes (on SQLite,
    one writer at a time, batches go one by one)."""
    site = setup_shop(fake_x)
    fake_x.hang_next(0.6, n=4)  # under the tests' 1 s timeout
    send(client, site, [order(n) for n in range(2000)])
    deliver()
    calls = fake_x.calls()
    assert sorted(len(r.conversions) for r in calls) == [500] * 4
    assert len({c["conversion_id"] for c in fake_x.accepted(PIXEL)}) == 2000
    spread = max(r.received_at for r in calls) - min(r.received_at for r in calls)
    if db.engine.dialect.name == "postgresql":
        assert spread < 0.6  # all four in flight together
    else:
        assert spread >= 1.8  # each posted after the one before was answered
    assert {d.status for d in deliveries()} == {"delivered"}


def test_a_flush_job_hands_over_to_the_next_after_its_time(
    x_app, client, ctx, fake_x, deliver, monkeypatch
):
    """Under a steady flood a job would never run out of batches: after
    JOB_SECONDS it stops claiming and queues the next flush job."""
    site = setup_shop(fake_x)
    monkeypatch.setattr(batching, "JOB_SECONDS", 0)  # each job: one batch, then hand over
    real, sent_per_job = batching.deliver_pixel, []
    monkeypatch.setattr(
        batching, "deliver_pixel", lambda key: sent_per_job.append(real(key)) or sent_per_job[-1]
    )
    send(client, site, [order(n) for n in range(1200)])
    deliver()
    assert sorted(len(r.conversions) for r in fake_x.calls()) == [200, 500, 500]
    assert len({c["conversion_id"] for c in fake_x.accepted(PIXEL)}) == 1200
    assert max(sent_per_job) == 1 and sum(sent_per_job) == 3


def test_one_request_never_mixes_pixels(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    other = Pixel(pixel_id="abc12", name="Second", connection=db.session.scalar(select(Connection)))
    db.session.add(Mapping(site=site, event_name="Order Completed", pixel=other, x_event_id="xyz9"))
    db.session.commit()
    send(client, site, [order(n) for n in range(3)])
    deliver()
    by_pixel = {r.pixel_id: [c["event_id"] for c in r.conversions] for r in fake_x.calls()}
    assert by_pixel == {PIXEL: [EVENT] * 3, "abc12": ["xyz9"] * 3}


def test_repeated_message_id_gives_one_conversion(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    send(client, site, [order(1), order(1)])
    send(client, site, [order(1)])
    deliver()
    assert [c["conversion_id"] for c in fake_x.accepted()] == ["order-1"]


def test_event_without_identifier_is_not_sent_and_says_why(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    send(client, site, [order(1, context={"ip": "203.0.113.9", "userAgent": "UA"})])
    deliver()
    assert fake_x.calls() == []
    [event] = db.session.scalars(select(ReceivedEvent))
    assert (event.outcome, event.reason) == ("dropped", "no_identifier")


def test_disabled_mapping_sends_nothing(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    db.session.scalar(select(Mapping)).enabled = False
    db.session.commit()
    send(client, site, [order(1)])
    deliver()
    assert fake_x.calls() == []
    assert db.session.scalar(select(ReceivedEvent)).outcome == "unmapped"


# --- status table ------------------------------------------------------------------


def test_400_batch_is_split_so_only_bad_conversions_fail(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    fake_x.reject_conversion_if = lambda c: (
        ("conversion_id", "conversion_id is bad") if c.get("conversion_id") == "order-bad" else None
    )
    messages = [order(n) for n in range(5)]
    messages[3]["properties"]["order_id"] = "order-bad"
    send(client, site, messages)
    deliver()
    assert sorted(c["conversion_id"] for c in fake_x.accepted()) == [
        "order-0",
        "order-1",
        "order-2",
        "order-4",
    ]
    rejected = [i for i in items() if i.status == "rejected"]
    assert [i.conversion_id for i in rejected] == ["order-bad"]
    assert "conversion_id is bad" in rejected[0].error
    [sent] = deliveries()
    assert sent.status == "partial"
    assert [a.conversions for a in sent.attempt_log][0] == 5


@pytest.mark.parametrize("status", [408, 423, 500, 502, 503, 504])
def test_transient_errors_are_retried_then_delivered(x_app, client, ctx, fake_x, deliver, status):
    site = setup_shop(fake_x)
    fake_x.fail_next(status)
    send(client, site, [order(1)])
    deliver()
    [sent] = deliveries()
    assert sent.status == "delivered"
    assert [a.status_code for a in sent.attempt_log] == [status, 200]
    assert sent.attempt_log[0].error and sent.retries == 1


def test_connection_errors_are_retried_then_fail_and_are_logged(
    x_app, client, ctx, fake_x, deliver
):
    site = setup_shop(fake_x)
    x_app.config["XTAG_X_API_BASE"] = "http://127.0.0.1:9"  # nothing listens there
    send(client, site, [order(1)])
    deliver()
    [sent] = deliveries()
    assert (sent.status, sent.attempts, sent.retries) == ("failed", 3, 2)
    first = sent.attempt_log[0]
    assert first.status_code is None and "connection to X failed" in first.error
    assert first.next_retry_at is not None and sent.attempt_log[-1].next_retry_at is None
    assert {i.status for i in items()} == {"failed"}


def test_timeout_is_retried(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    fake_x.hang_next(2.5)
    send(client, site, [order(1)])
    deliver()
    [sent] = deliveries()
    assert sent.status == "delivered"
    assert sent.attempt_log[0].status_code is None and "timed out" in sent.attempt_log[0].error


def test_429_waits_until_rate_limit_reset(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    reset = int(time.time()) + 2
    fake_x.fail_next(429, headers={"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)})
    send(client, site, [order(1)])
    deliver()
    first, second = fake_x.calls()
    assert first.status == 429 and second.status == 200
    assert second.received_at >= reset


def test_spent_rate_limit_holds_the_connection_until_reset(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    fake_x.rate_limit_remaining = 1
    fake_x.rate_limit_reset = reset = int(time.time()) + 2
    send(client, site, [order(1)])
    deliver()
    send(client, site, [order(2)])
    deliver()
    first, second = fake_x.calls()
    assert first.status == second.status == 200  # the second waited instead of hitting a 429
    assert second.received_at >= reset


def test_one_batch_at_a_time_may_spend_the_whole_budget(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    fake_x.rate_limit_remaining = 3
    fake_x.rate_limit_reset = reset = int(time.time()) + 5
    for n in range(3):
        send(client, site, [order(n)])
        deliver()
    calls = fake_x.calls()
    assert [r.status for r in calls] == [200] * 3
    assert all(r.received_at < reset for r in calls)  # none waited while some budget was left


def test_batches_sent_at_once_stay_within_the_rate_limit(x_app, client, ctx, fake_x, deliver):
    """With several batches in flight, the connection is held while what X
    says remains would not cover them all: no 429 for the ones beside."""
    site = setup_shop(fake_x)
    send(client, site, [order(n) for n in range(3500)])
    consuming.Consumer(x_app, name="w").drain()  # recorded: the budget's clock starts now
    fake_x.rate_limit_remaining = 6
    # X counts a request when it answers it: all 7 must be counted before the
    # reset (else the budget is whole again and none had to wait)
    fake_x.rate_limit_reset = reset = int(time.time()) + 4
    fake_x.hang_next(0.5, n=7)  # X takes its time: on PostgreSQL batches overlap
    deliver()
    calls = fake_x.calls()
    assert [r.status for r in calls] == [200] * 7
    assert len({c["conversion_id"] for c in fake_x.accepted(PIXEL)}) == 3500
    assert any(r.received_at >= reset for r in calls)  # the last waited for the reset


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_access_errors_are_terminal_and_mark_the_connection(
    x_app, client, ctx, fake_x, deliver, status
):
    site = setup_shop(fake_x)
    fake_x.fail_next(status)
    send(client, site, [order(1)])
    deliver()
    [sent] = deliveries()
    assert (sent.status, sent.attempts) == ("failed", 1)
    connection = db.session.scalar(select(Connection))
    assert connection.status == "unhealthy" and f"HTTP {status}" in connection.last_error
    assert {i.status for i in items()} == {"failed"}


def test_after_the_last_retry_a_delivery_fails_and_a_retry_by_hand_succeeds(
    x_app, client, ctx, fake_x, deliver
):
    site = setup_shop(fake_x)
    fake_x.fail_next(503, n=3)  # XTAG_RETRY_DELAYS=1,2: three attempts in all
    send(client, site, [order(1)])
    deliver()
    [sent] = deliveries()
    assert (sent.status, sent.attempts, sent.retries) == ("failed", 3, 2)
    assert fake_x.accepted() == []
    retrying.retry(None, sent)
    deliver()
    [sent] = deliveries()
    assert sent.status == "delivered" and len(fake_x.accepted()) == 1
    with pytest.raises(Conflict, match="delivered; only failed or partial"):
        retrying.retry(None, sent)


# --- OAuth 2.0 refresh ----------------------------------------------------------------


def test_oauth2_refreshes_before_expiry_and_stores_rotated_tokens(
    x_app, client, ctx, fake_x, deliver
):
    credentials = {**CREDENTIALS["oauth2"](fake_x), "expires_at": int(time.time()) + 60}
    site = setup_shop(fake_x, "oauth2", credentials)
    send(client, site, [order(1)])
    deliver()
    assert fake_x.refresh_count == 1
    assert fake_x.calls()[0].status == 200
    db.session.expire_all()
    stored = db.session.scalar(select(Connection)).credentials
    assert stored["refresh_token"] == fake_x.refresh_token != credentials["refresh_token"]
    assert stored["expires_at"] > time.time() + 3600


def test_oauth2_refreshes_once_after_a_401(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x, "oauth2")
    fake_x.expire_access_token()
    send(client, site, [order(1)])
    deliver()
    assert [r.status for r in fake_x.calls()] == [401, 200]
    assert fake_x.refresh_count == 1
    [sent] = deliveries()
    assert sent.status == "delivered" and sent.attempts == 2


def test_two_workers_refreshing_together_spend_the_refresh_token_once(x_app, ctx, fake_x):
    setup_shop(fake_x, "oauth2")
    connection_id = db.session.scalar(select(Connection.id))
    stale = fake_x.access_token
    fake_x.expire_access_token()
    fake_x.token_delay = 0.3
    results, errors = [], []

    def refresh():
        with x_app.app_context():
            try:
                results.append(credentials.oauth2_credentials(connection_id, rejected_token=stale))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert fake_x.refresh_count == 1
    assert results[0]["access_token"] == results[1]["access_token"] == fake_x.access_token
    db.session.expire_all()
    assert (
        db.session.scalar(select(Connection)).credentials["refresh_token"] == fake_x.refresh_token
    )


def test_refused_refresh_marks_the_connection_and_fails(x_app, client, ctx, fake_x, deliver):
    credentials = {**CREDENTIALS["oauth2"](fake_x), "refresh_token": "revoked", "expires_at": 0}
    site = setup_shop(fake_x, "oauth2", credentials)
    send(client, site, [order(1)])
    deliver()
    [sent] = deliveries()
    assert sent.status == "failed"
    connection = db.session.scalar(select(Connection))
    assert connection.status == "unhealthy" and "refresh" in connection.last_error


def test_a_retry_by_hand_resends_what_x_rejected_once_its_cause_is_fixed(
    x_app, client, ctx, fake_x, deliver
):
    site = setup_shop(fake_x)
    fake_x.reject_conversion_if = lambda c: ("event_id", "event_id is not a single event tag")
    send(client, site, [order(1)])
    deliver()
    [sent] = deliveries()
    assert sent.status == "failed" and [i.status for i in items()] == ["rejected"]
    fake_x.reject_conversion_if = None  # the admin fixed the event at X
    retrying.retry(None, sent)
    deliver()
    [sent] = deliveries()
    assert sent.status == "delivered"
    assert [c["conversion_id"] for c in fake_x.accepted()] == ["order-1"]
