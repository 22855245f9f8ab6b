"""Match quality: per pixel and UTC day, what the conversions that reached X
carried, how many events were dropped for carrying nothing, the score, and
what to add."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.support import pii
from tests.support.sending import order, send
from tests.support.shop import PIXEL, setup_shop
from tests.support.web import token_for
from xtag.extensions import db
from xtag.models import DeliveryItem, Pixel, utcnow
from xtag.pipeline import quality


@pytest.fixture
def shop(ctx, fake_x):
    return setup_shop(fake_x)


@pytest.fixture
def marketer(ctx):
    return token_for("marketer")


def anonymous(n: int) -> dict:
    """An order with nothing X can match on (no click id, nobody identified)."""
    return order(n, context={})


def test_counts_score_and_advice_over_the_window(x_app, client, shop, marketer, fake_x, deliver):
    messages = [order(n) for n in range(6)]  # a click id each
    messages += [order(6, traits={"email": pii.RAW_EMAIL}, context={})]
    messages += [order(7, context={"traits": {"phone": pii.RAW_PHONE_LOCAL}})]
    messages += [anonymous(8), anonymous(9)]
    send(client, shop, messages)
    deliver()
    pixel = db.session.query(Pixel).filter_by(pixel_id=PIXEL).one()
    r = client.get(f"/api/v1/pixels/{pixel.id}/quality?days=7", headers=marketer)
    assert r.status_code == 200, r.json
    body = r.json
    assert (body["days"], body["conversions"]) == (7, 8)
    assert body["with"] == {"twclid": 6, "hashed_email": 1, "hashed_phone_number": 1}
    assert (body["weak_only"], body["dropped_no_identifier"]) == (0, 2)
    assert body["score"] == 80.0  # 8 of the 10 orders could be matched
    assert len(body["per_day"]) == 7
    assert body["per_day"][-1]["day"] == utcnow().date().isoformat()
    assert body["per_day"][-1]["conversions"] == 8 and body["per_day"][0]["conversions"] == 0
    assert any("Order Completed conversions carry no email" in a for a in body["advice"])
    assert any("2 events carried nothing" in a for a in body["advice"])


def test_days_are_utc_days_and_test_conversions_do_not_count(
    x_app, client, shop, marketer, fake_x, deliver
):
    send(client, shop, [order(1), order(2)])
    deliver()
    yesterday = utcnow() - timedelta(days=1)
    db.session.execute(
        update(DeliveryItem)
        .where(DeliveryItem.conversion_id == "order-1")
        .values(created_at=yesterday)
    )
    shop.test_mode = True
    db.session.commit()
    send(client, shop, [order(3)])
    deliver()
    pixel = db.session.query(Pixel).filter_by(pixel_id=PIXEL).one()
    body = client.get(f"/api/v1/pixels/{pixel.id}/quality?days=2", headers=marketer).json
    assert body["conversions"] == 2
    assert [d["conversions"] for d in body["per_day"]] == [1, 1]
    assert [d["day"] for d in body["per_day"]] == [
        yesterday.date().isoformat(),
        utcnow().date().isoformat(),
    ]


@pytest.mark.parametrize(("query", "status"), [("days=0", 400), ("days=91", 400), ("days=x", 400)])
def test_a_bad_window_is_a_400(client, shop, marketer, query, status):
    pixel = db.session.query(Pixel).filter_by(pixel_id=PIXEL).one()
    r = client.get(f"/api/v1/pixels/{pixel.id}/quality?{query}", headers=marketer)
    assert r.status_code == status and r.json["error"]["field"] == "days"


def test_an_unknown_pixel_is_a_404_and_a_token_is_required(client, shop, marketer):
    assert client.get("/api/v1/pixels/999999/quality", headers=marketer).status_code == 404
    assert client.get("/api/v1/pixels/1/quality").status_code == 401


def test_the_score_is_none_without_conversions():
    assert quality.Day(None).score is None
