"""Test mode: a site's events are recorded and mapped, each batch that would
go to X is recorded as a `test` delivery holding the exact request, and
nothing reaches X; a test event from the admin does the same on a live site."""

from __future__ import annotations

import json

import pytest

from tests.support.sending import order, send
from tests.support.shop import EVENT, PIXEL, deliveries, events, items, setup_shop
from xtag.core.errors import Conflict
from xtag.extensions import db
from xtag.models import Mapping, Pixel
from xtag.services import deliveries as retrying
from xtag.services import sites


@pytest.fixture
def shop(ctx, fake_x):
    site = setup_shop(fake_x)
    site.test_mode = True
    db.session.commit()
    return site


def test_a_site_in_test_mode_records_the_request_and_sends_nothing(
    x_app, client, shop, fake_x, deliver
):
    send(client, shop, [order(1), order(2)])
    deliver()
    assert fake_x.requests == []
    [test] = deliveries()
    assert (test.status, test.conversions, test.attempts) == ("test", 2, 0)
    [logged] = test.attempt_log
    body = json.loads(logged.request_body)
    assert [c["conversion_id"] for c in body["conversions"]] == ["order-1", "order-2"]
    assert body["conversions"][0]["event_id"] == EVENT
    assert body["conversions"][0]["identifiers"][0] == {"twclid": "tw-1"}
    assert logged.status_code is None and "not sent" in logged.error
    assert {i.status for i in items()} == {"test"}
    assert [(e.outcome, e.test, e.pixels) for e in events()] == [("forwarded", True, [PIXEL])] * 2


def test_test_deliveries_are_never_sent_later(x_app, client, shop, fake_x, deliver, work):
    send(client, shop, [order(1)])
    deliver()
    [test] = deliveries()
    with pytest.raises(Conflict):
        retrying.retry(None, test)
    assert retrying.retry_failed(None) == []
    shop.test_mode = False
    db.session.commit()
    work()  # the sweep runs too
    assert fake_x.requests == [] and deliveries()[0].status == "test"


def test_the_mode_is_fixed_when_the_event_is_recorded(x_app, client, shop, fake_x, work, deliver):
    x_app.config["XTAG_BATCH_WINDOW_MS"] = 60_000  # recorded now, batched much later
    send(client, shop, [order(1)])
    work()  # recorded in test mode, waiting for its batch
    shop.test_mode = False
    db.session.commit()
    send(client, shop, [order(2)])
    work()
    x_app.config["XTAG_BATCH_WINDOW_MS"] = 0
    deliver()
    test, live = sorted(deliveries(), key=lambda d: d.status != "test")
    assert (test.status, [i.conversion_id for i in test.items]) == ("test", ["order-1"])
    assert (live.status, [i.conversion_id for i in live.items]) == ("delivered", ["order-2"])
    assert [c["conversion_id"] for c in fake_x.accepted()] == ["order-2"]


def test_test_and_live_conversions_of_a_shared_pixel_never_share_a_batch(
    x_app, client, shop, fake_x, deliver
):
    from tests.support import factories

    live_site = factories.site(name="Live shop")
    pixel = db.session.query(Pixel).filter_by(pixel_id=PIXEL).one()
    db.session.add(
        Mapping(site=live_site, event_name="Order Completed", pixel=pixel, x_event_id=EVENT)
    )
    db.session.commit()
    interleaved = [(shop if n % 2 else live_site, order(n)) for n in range(1, 9)]
    for site, message in interleaved:
        send(client, site, [message])
    deliver()
    by_status = {d.status: sorted(i.conversion_id for i in d.items) for d in deliveries()}
    assert by_status == {
        "test": ["order-1", "order-3", "order-5", "order-7"],
        "delivered": ["order-2", "order-4", "order-6", "order-8"],
    }
    assert sorted(c["conversion_id"] for c in fake_x.accepted()) == by_status["delivered"]


def test_a_test_event_on_a_live_site_is_recorded_and_never_reaches_x(x_app, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    message_id = sites.send_test_event(site)
    deliver()
    assert fake_x.requests == []
    [event] = events()
    assert (event.message_id, event.event_name, event.test) == (
        message_id,
        "Order Completed",
        True,
    )
    assert event.outcome == "forwarded"
    [test] = deliveries()
    assert test.status == "test"
    assert json.loads(test.attempt_log[0].request_body)["conversions"][0]["conversion_id"] == (
        message_id
    )


def test_a_test_event_on_a_site_without_mappings_shows_it_is_unmapped(ctx, work):
    from tests.support import factories

    site = factories.site()
    sites.send_test_event(site)
    work()
    [event] = events()
    assert (event.outcome, event.test, event.event_name) == ("unmapped", True, sites.TEST_EVENT)
    assert deliveries() == []
