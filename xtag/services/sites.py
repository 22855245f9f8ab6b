"""Changes to a site beyond its fields: rotating its write key."""

from __future__ import annotations

from datetime import datetime, timedelta

from xtag.extensions import db
from xtag.models import Site, User, new_write_key, utcnow
from xtag.services import writekeys
from xtag.services.changes import SECRET, audit


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
    return until
