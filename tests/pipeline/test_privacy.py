"""The storage scan that runs after every test really finds raw PII and secrets."""

from sqlalchemy import select

from tests.support import factories, pii
from xtag.extensions import db
from xtag.models import Connection, ReceivedEvent
from xtag.pipeline import queues


def test_scan_finds_raw_email_in_redis(app, ctx):
    client = queues.redis_client()
    client.set("stray", f"hello {pii.RAW_EMAIL}")
    assert pii.leaks(db, client) == [f"redis: {pii.RAW_EMAIL.lower()}", "redis: jane.doe"]
    client.delete("stray")
    assert pii.leaks(db, client) == []


def test_scan_finds_raw_phone_and_secret_in_the_database(app, ctx):
    site = factories.site()
    event = ReceivedEvent(
        site_id=site.id, type="track", received_at=site.created_at, outcome="x",
        message={"properties": {"phone": pii.RAW_PHONE_E164}},
    )  # fmt: skip
    db.session.add(event)
    conn = Connection(name="plain", auth_type="pixel_token", credentials_encrypted=pii.SECRETS[0])
    db.session.add(conn)
    db.session.commit()
    found = pii.leaks(db, queues.redis_client())
    assert "database: 4155552671" in found and f"database: {pii.SECRETS[0]}" in found
    db.session.delete(event)
    db.session.delete(conn)
    db.session.commit()
    assert pii.leaks(db, queues.redis_client()) == []
    assert db.session.scalars(select(ReceivedEvent)).all() == []


def test_log_scan_finds_raw_email_phone_and_secrets():
    assert pii.found_in(f"login {pii.RAW_EMAIL} from {pii.RAW_PHONE_E164}") == [
        pii.RAW_EMAIL.lower(),
        "jane.doe",
        "4155552671",
    ]
    assert pii.found_in(f"token={pii.SECRETS[0]}") == [pii.SECRETS[0]]
    assert pii.found_in("queued 3 events for site 1") == []
