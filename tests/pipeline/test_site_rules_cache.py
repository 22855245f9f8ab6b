"""The worker keeps each site's mappings and test mode between reads, and
asks the database again as soon as any of them changes: a marketer's change
applies to the next event, and a read in between costs no query for them."""

from __future__ import annotations

import contextlib

from sqlalchemy import event, select, update

from tests.support.sending import order, send
from tests.support.shop import events, items, setup_shop
from xtag.extensions import db
from xtag.models import Mapping, Pixel, Site
from xtag.pipeline import consuming, intake, queues


@contextlib.contextmanager
def statements():
    """The SQL the database is sent meanwhile."""
    sent: list[str] = []

    def note(_conn, _cursor, statement, *_args) -> None:
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


def rules_read(sent: list[str]) -> list[str]:
    return [s for s in sent if s.lstrip().upper().startswith("SELECT") and "mappings" in s]


def test_reads_after_the_first_ask_nothing_of_mappings_or_test_mode(x_app, client, ctx, fake_x):
    site = setup_shop(fake_x)
    consumer = consuming.Consumer(x_app, name="w")
    send(client, site, [order(1)])
    with statements() as first:
        consumer.drain()
    send(client, site, [order(2)])
    with statements() as second:
        consumer.drain()
    assert rules_read(first) and not rules_read(second)
    assert not [s for s in second if "test_mode" in s]
    assert [e.outcome for e in events()] == ["forwarded", "forwarded"]


def test_a_changed_mapping_applies_to_the_next_event(x_app, client, ctx, fake_x):
    site = setup_shop(fake_x)
    consumer = consuming.Consumer(x_app, name="w")
    send(client, site, [order(1)])
    consumer.drain()
    mapping = db.session.scalar(select(Mapping))
    mapping.x_event_id = "tw-new"  # as the admin and the API change it: the ORM
    db.session.commit()
    send(client, site, [order(2)])
    consumer.drain()
    db.session.execute(update(Mapping).values(enabled=False))  # a bulk statement
    db.session.commit()
    send(client, site, [order(3)])
    consumer.drain()
    assert [i.conversion["event_id"] for i in items()] == ["o87ne", "tw-new"]
    assert [e.outcome for e in events()] == ["forwarded", "forwarded", "unmapped"]


def test_test_mode_and_a_deleted_pixel_apply_to_the_next_event(x_app, client, ctx, fake_x):
    site = setup_shop(fake_x)
    consumer = consuming.Consumer(x_app, name="w")
    send(client, site, [order(1)])
    consumer.drain()
    site.test_mode = True
    db.session.commit()
    send(client, site, [order(2)])
    consumer.drain()
    db.session.delete(db.session.scalar(select(Pixel)))  # its mappings go with it
    db.session.commit()
    send(client, site, [order(3)])
    consumer.drain()
    assert [(e.outcome, e.test) for e in events()] == [
        ("forwarded", False),
        ("forwarded", True),
        ("unmapped", True),
    ]


def test_a_change_another_process_announces_is_seen(x_app, client, ctx, fake_x):
    """The worker is another process than the admin: only Redis tells it."""
    site = setup_shop(fake_x)
    consumer = consuming.Consumer(x_app, name="w")
    send(client, site, [order(1)])
    consumer.drain()
    with db.engine.begin() as connection:  # a change this process's session never saw
        connection.execute(update(Site).values(test_mode=True))
    send(client, site, [order(2)])
    consumer.drain()
    queues.redis_client().set(intake.VERSION, "announced by the admin's process")
    send(client, site, [order(3)])
    consumer.drain()
    assert [e.test for e in events()] == [False, False, True]


def test_a_change_rolled_back_announces_nothing(app, ctx):
    from tests.support import factories

    site = factories.site()
    version = intake._version(queues.redis_client())
    site.test_mode = True
    db.session.flush()
    db.session.rollback()
    db.session.execute(update(Site).values(name="Other"))
    db.session.rollback()
    assert queues.redis_client().get(intake.VERSION) == version
    site = db.session.get(Site, site.id)
    site.name = "Renamed"
    db.session.commit()
    assert queues.redis_client().get(intake.VERSION) != version
