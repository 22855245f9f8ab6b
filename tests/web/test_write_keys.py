"""Rotating a site's write key (issue 13): a new key at once, the old one
accepted for XTAG_WRITE_KEY_GRACE_HOURS, or not at all when it leaked;
from the API, the admin and the CLI, admins only, audited without keys."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.support import factories
from tests.support.sending import basic, track
from tests.support.web import csrf, login, token_for
from xtag.core.times import parse
from xtag.extensions import db
from xtag.models import AuditEntry, Site, utcnow


@pytest.fixture
def site(ctx):
    return factories.site()


def accepted(client, key: str) -> bool:
    return client.post("/v1/track", json=track(), headers=basic(key)).status_code == 200


def test_api_rotation_keeps_the_old_key_for_the_grace_period(client, site):
    old = site.write_key
    r = client.post(
        f"/api/v1/sites/{site.id}/rotate-write-key", json={}, headers=token_for("admin")
    )
    assert r.status_code == 200, r.json
    new, until = r.json["write_key"], parse(r.json["previous_valid_until"])
    assert new != old and abs(until - (utcnow() + timedelta(hours=24))) < timedelta(minutes=1)
    assert accepted(client, new) and accepted(client, old)
    db.session.get(Site, site.id).previous_write_key_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert accepted(client, new) and not accepted(client, old)
    [entry] = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "rotate")).all()
    assert old not in str(entry.changes) and new not in str(entry.changes)


def test_a_leaked_key_is_revoked_at_once_and_marketers_may_not_rotate(client, site):
    old = site.write_key
    path = f"/api/v1/sites/{site.id}/rotate-write-key"
    assert client.post(path, json={}, headers=token_for("marketer")).status_code == 403
    admin = token_for("admin")
    r = client.post(path, json={"revoke_previous": True}, headers=admin)
    assert r.status_code == 200
    assert not accepted(client, old) and accepted(client, r.json["write_key"])
    assert client.post(path, json={"revoke": 1}, headers=admin).status_code == 400


def test_admin_and_cli_rotate_too(app, client, runner, site):
    old = site.write_key
    login(client, "admin")
    token = csrf(client, f"/sites/{site.id}")
    r = client.post(f"/sites/{site.id}/rotate-write-key", data={"csrf_token": token})
    assert r.status_code == 302
    db.session.expire_all()
    after_admin = db.session.get(Site, site.id).write_key
    assert after_admin != old and accepted(client, old)
    result = runner.invoke(args=["xtag", "rotate-write-key", str(site.id), "--revoke-previous"])
    assert result.exit_code == 0, result.output
    new = re.search(r"new write key: (\S+)", result.output).group(1)
    assert accepted(client, new) and not accepted(client, after_admin)
