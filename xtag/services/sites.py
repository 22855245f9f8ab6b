"""Actions on a site beyond its fields: rotating its write key, sending a
test event."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select

from xtag.core.events import prepare
from xtag.core.messages import RequestFacts, validate
from xtag.extensions import db
from xtag.models import Mapping, Site, User, new_write_key, utcnow
from xtag.pipeline import inbox
from xtag.services import pixelscripts, writekeys
from xtag.services.changes import SECRET, audit

TEST_EVENT = "xtag test event"  # the name a test event has when the site maps nothing
TEST_LIBRARY = {"name": "xtag admin", "version": "1"}


def rotate_write_key(
    actor: User | None, site: Site, revoke_previous: bool, grace_hours: int
) -> datetime:
    """A new write key at once; the old one accepted for `grace_hours` more,
    or not at all when `revoke_previous` (a leaked key). Audited (never the
    keys themselves); returns until when the old key is accepted."""
    until = utcnow() + timedelta(hours=0 if revoke_previous else grace_hours)
    site.previous_write_key, site.previous_write_key_until = site.write_key, until
    site.write_key = new_write_key()
    changes = {"write_key": SECRET, "revoke_previous": revoke_previous}
    audit(actor, "rotate", "site", site.id, changes)
    db.session.commit()
    writekeys.forget()
    pixelscripts.forget()
    return until


def mapped_events(site: Site) -> list[str]:
    """The event names the site maps to a pixel (enabled), for a test event."""
    return list(
        db.session.scalars(
            select(Mapping.event_name)
            .where(Mapping.site_id == site.id, Mapping.enabled.is_(True))
            .distinct()
            .order_by(Mapping.event_name)
        )
    )


def send_test_event(site: Site, event_name: str | None = None) -> str:
    """A real event through the collector's own steps (validated, prepared,
    queued in the inbox) flagged as a test whatever the site's mode: it is
    recorded and mapped, its conversions become a `test` delivery, and
    nothing reaches X. Returns its messageId, to find it in the debugger."""
    names = mapped_events(site)
    name = event_name if event_name in names else (names[0] if names else TEST_EVENT)
    message_id = f"xtag-test-{uuid.uuid4()}"
    message = {
        "type": "track",
        "event": name,
        "messageId": message_id,
        "anonymousId": "xtag-test-visitor",
        "properties": {"value": 1, "currency": "USD", "conversion_id": message_id},
        "context": {
            "twclid": "xtag-test-click",
            "library": TEST_LIBRARY,
            "consent": {"categoryPreferences": {"advertising": True}},
        },
    }
    kind = validate(message, "", "track")
    facts = RequestFacts(None, "xtag admin (test event)", None, False, utcnow())
    event = prepare(message, kind, writekeys.site_rules(site), facts)
    event["test"] = True
    inbox.accept([event], f"site:{site.id}")
    return message_id
