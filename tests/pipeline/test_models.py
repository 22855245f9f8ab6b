"""Schema, migrations and credentials at rest."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tests.support import factories, pii
from xtag.core.crypto import CredentialError
from xtag.extensions import db
from xtag.models import ApiToken, Connection, Mapping, ReceivedEvent, Site, utcnow
from xtag.services import changes
from xtag.services.resources import SITES


def test_migrations_have_one_head_and_match_the_models(app, ctx):
    config = app.extensions["migrate"].migrate.get_config()
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


def test_passwords_are_hashed_with_scrypt(ctx):
    user = factories.user(password="correct horse battery")
    assert user.password_hash.startswith("scrypt:")
    assert user.check_password("correct horse battery")
    assert not user.check_password("wrong")


def test_api_token_only_hash_is_stored_and_revocation_works(ctx):
    user = factories.user()
    row, token = ApiToken.issue(user, name="ci")
    db.session.add(row)
    db.session.commit()
    assert token not in repr([tuple(r) for r in db.session.execute(select(ApiToken.__table__))])
    assert ApiToken.find(token).user == user
    assert ApiToken.find(token + "x") is None
    row.revoked_at = row.created_at
    db.session.commit()
    assert ApiToken.find(token) is None


def test_credentials_are_encrypted_and_keys_rotate(app, ctx):
    conn = factories.connection(
        "oauth1",
        {
            "consumer_key": "ck",
            "consumer_secret": pii.SECRETS[1],
            "access_token": "at",
            "access_token_secret": pii.SECRETS[2],
        },
    )
    assert pii.SECRETS[1] not in conn.credentials_encrypted
    old_key = app.config["XTAG_ENCRYPTION_KEYS"][0]
    new_key = Fernet.generate_key().decode()
    app.config["XTAG_ENCRYPTION_KEYS"] = [new_key, old_key]
    try:
        for row in db.session.scalars(select(Connection)):
            row.reencrypt()
        db.session.commit()
        app.config["XTAG_ENCRYPTION_KEYS"] = [new_key]  # old key removed
        db.session.expire_all()
        assert db.session.get(Connection, conn.id).credentials["consumer_secret"] == pii.SECRETS[1]
        app.config["XTAG_ENCRYPTION_KEYS"] = [old_key]
        with pytest.raises(CredentialError):
            _ = db.session.get(Connection, conn.id).credentials
    finally:
        app.config["XTAG_ENCRYPTION_KEYS"] = [old_key]


def test_mapping_is_unique_per_site_event_pixel_and_x_event(ctx):
    site = factories.site()
    first = factories.mapping(site, "Purchase")
    factories.mapping(site, "Purchase", x_event_id="o87nf")  # another X event: fine
    db.session.add(Mapping(site=site, event_name="Purchase", pixel=first.pixel, x_event_id="o87ne"))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_deleting_a_site_deletes_its_mappings(ctx):
    site = factories.site()
    factories.mapping(site, "Purchase")
    db.session.delete(site)
    db.session.commit()
    assert db.session.scalars(select(Mapping)).all() == []


def test_deleting_a_site_deletes_its_mappings_and_events_on_every_database(client, ctx):
    site = factories.site()
    factories.mapping(site, "Order Completed")
    db.session.add(
        ReceivedEvent(site_id=site.id, type="track", received_at=utcnow(), outcome="unmapped")
    )
    db.session.commit()
    changes.delete(SITES, None, db.session.get(Site, site.id))
    db.session.expire_all()
    assert db.session.query(Mapping).count() == 0 and db.session.query(ReceivedEvent).count() == 0
