"""A shop set up as the tests need it: a site whose "Order Completed" maps
to one pixel on the fake X, with each kind of credentials; and what the
database recorded of it."""

from __future__ import annotations

import time

from sqlalchemy import select

from tests.support import factories
from xtag.extensions import db
from xtag.models import Connection, Delivery, DeliveryItem, Mapping, Pixel, ReceivedEvent

PIXEL = "o8z6j"
EVENT = "o87ne"
CREDENTIALS = {
    "pixel_token": lambda fake: {"token": fake.pixel_token},
    "oauth1": lambda fake: {
        "consumer_key": fake.consumer_key,
        "consumer_secret": fake.consumer_secret,
        "access_token": fake.oauth1_access_token,
        "access_token_secret": fake.oauth1_access_token_secret,
    },
    "oauth2": lambda fake: {
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "access_token": fake.access_token,
        "refresh_token": fake.refresh_token,
        "expires_at": int(time.time()) + 7200,
    },
}


def setup_shop(fake_x, auth_type="pixel_token", credentials=None):
    site = factories.site(default_phone_region="US")
    connection = Connection(name="X", auth_type=auth_type)
    connection.credentials = credentials or CREDENTIALS[auth_type](fake_x)
    pixel = Pixel(pixel_id=PIXEL, name="Main", connection=connection)
    db.session.add_all([connection, pixel])
    db.session.add(Mapping(site=site, event_name="Order Completed", pixel=pixel, x_event_id=EVENT))
    db.session.commit()
    return site


def deliveries() -> list[Delivery]:
    db.session.expire_all()
    return list(db.session.scalars(select(Delivery).order_by(Delivery.id)))


def items() -> list[DeliveryItem]:
    db.session.expire_all()
    return list(db.session.scalars(select(DeliveryItem).order_by(DeliveryItem.id)))


def events() -> list[ReceivedEvent]:
    db.session.expire_all()
    return list(db.session.scalars(select(ReceivedEvent).order_by(ReceivedEvent.id)))
