"""Rows for tests, made the way the product makes them."""

from __future__ import annotations

from xtag.extensions import db
from xtag.models import Connection, Mapping, Pixel, Site, User


def site(**fields) -> Site:
    row = Site(
        name=fields.pop("name", "Shop"), allowed_origins=fields.pop("allowed_origins", []), **fields
    )
    db.session.add(row)
    db.session.commit()
    return row


def user(
    email: str = "marketer@example.com", role: str = "marketer", password: str = "correct horse"
) -> User:
    row = User(email=email, role=role, active=True)
    row.set_password(password)
    db.session.add(row)
    db.session.commit()
    return row


def connection(auth_type: str = "pixel_token", credentials: dict | None = None) -> Connection:
    row = Connection(name="X account", auth_type=auth_type)
    row.credentials = credentials or {"token": "pixel-token-secret-value"}
    db.session.add(row)
    db.session.commit()
    return row


def mapping(
    site_row: Site, event_name: str, pixel_id: str = "o8z6j", x_event_id: str = "o87ne"
) -> Mapping:
    pixel = db.session.query(Pixel).filter_by(pixel_id=pixel_id).first()
    if pixel is None:
        pixel = Pixel(pixel_id=pixel_id, name="Main pixel", connection=connection())
        db.session.add(pixel)
    row = Mapping(site=site_row, event_name=event_name, pixel=pixel, x_event_id=x_event_id)
    db.session.add(row)
    db.session.commit()
    return row
