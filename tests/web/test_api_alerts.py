"""GET /api/v1/alerts for anyone signed in; GET/PATCH /api/v1/settings for
admins: the webhook URL write-only (masked), checked, audited without it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.support import factories
from tests.support.web import token_for
from xtag.extensions import db
from xtag.models import AuditEntry, Connection, Setting, Site, utcnow
from xtag.pipeline import alerts

TOKEN = "xoxb-alert-hook-secret-5a7e01"
URL = f"https://hooks.slack.com/services/T000/B000/{TOKEN}"


@pytest.fixture
def admin(ctx):
    return token_for("admin")


@pytest.fixture
def marketer(ctx):
    return token_for("marketer")


def silent_site(name: str = "Blog") -> Site:
    site = factories.site(name=name, silence_alert_hours=1)
    db.session.execute(
        update(Site).where(Site.id == site.id).values(created_at=utcnow() - timedelta(hours=3))
    )
    db.session.commit()
    return site


def test_alerts_lists_what_is_going_on_now_for_any_role(client, admin, marketer):
    site = silent_site()
    connection = factories.connection()
    connection.status, connection.last_error = "unhealthy", "Invalid pixel token"
    db.session.commit()
    alerts.check()

    r = client.get("/api/v1/alerts", headers=marketer)
    assert r.status_code == 200
    shown = {(a["kind"], a["subject"]) for a in r.json}
    assert shown == {
        ("site_silent", f"site:{site.id}"),
        ("connection_failing", f"connection:{connection.id}"),
    }
    for alert in r.json:
        assert set(alert) == {"kind", "subject", "since", "message"}
        assert alert["since"].endswith("Z")
    [failing] = [a for a in r.json if a["kind"] == "connection_failing"]
    assert "Invalid pixel token" in failing["message"]
    assert client.get("/api/v1/alerts", headers=admin).json == r.json

    connection = db.session.get(Connection, connection.id)
    connection.status, connection.last_error = "healthy", None
    db.session.commit()
    alerts.check()
    assert [a["kind"] for a in client.get("/api/v1/alerts", headers=marketer).json] == [
        "site_silent"
    ]


def test_alerts_need_a_token(client, ctx):
    assert client.get("/api/v1/alerts").status_code == 401
    assert client.get("/api/v1/settings").status_code == 401
    assert client.patch("/api/v1/settings", json={"alert_webhook_url": URL}).status_code == 401


def test_settings_show_the_webhook_masked_and_audit_it_without_the_url(client, admin):
    r = client.get("/api/v1/settings", headers=admin)
    assert r.status_code == 200
    assert r.json == {"alert_webhook_url": None, "alert_webhook_url_source": None}

    r = client.patch("/api/v1/settings", json={"alert_webhook_url": URL}, headers=admin)
    assert r.status_code == 200
    assert r.json["alert_webhook_url_source"] == "setting"
    shown = r.json["alert_webhook_url"]
    assert shown.startswith("https://hooks.slack.com/") and TOKEN not in shown
    assert client.get("/api/v1/settings", headers=admin).json == r.json
    assert alerts.webhook_url() == URL  # what the worker posts to

    [entry] = db.session.scalars(select(AuditEntry).where(AuditEntry.object_type == "settings"))
    assert entry.changes == {"alert_webhook_url": "changed"}
    audit = client.get("/api/v1/audit", headers=admin).get_data(as_text=True)
    stored = db.session.scalar(select(Setting.value_encrypted))
    assert TOKEN not in audit and TOKEN not in stored


def test_null_goes_back_to_the_environment_default(client, admin, app):
    app.config["XTAG_ALERT_WEBHOOK_URL"] = "https://alerts.example.com/hook/from-the-environment"
    client.patch("/api/v1/settings", json={"alert_webhook_url": URL}, headers=admin)
    r = client.patch("/api/v1/settings", json={"alert_webhook_url": None}, headers=admin)
    assert r.status_code == 200
    assert r.json["alert_webhook_url_source"] == "environment"
    assert r.json["alert_webhook_url"].startswith("https://alerts.example.com/")
    assert "from-the-environment" not in r.json["alert_webhook_url"]
    assert alerts.webhook_url() == app.config["XTAG_ALERT_WEBHOOK_URL"]
    changes = [
        e.changes
        for e in db.session.scalars(
            select(AuditEntry).where(AuditEntry.object_type == "settings").order_by(AuditEntry.id)
        )
    ]
    assert changes == [{"alert_webhook_url": "changed"}, {"alert_webhook_url": "cleared"}]


@pytest.mark.parametrize(
    "value",
    [
        "ftp://hooks.example.com/x",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "hooks.slack.com/services/x",
        "https://",
        "https://hooks.example.com:99999/x",
        "https://hooks.example.com/a b",
        "",
        42,
        "https://hooks.example.com/" + "x" * 2000,
    ],
)
def test_settings_refuse_anything_but_an_http_or_https_url(client, admin, value):
    r = client.patch("/api/v1/settings", json={"alert_webhook_url": value}, headers=admin)
    assert r.status_code == 400
    assert r.json["error"]["field"] == "alert_webhook_url"
    assert client.get("/api/v1/settings", headers=admin).json["alert_webhook_url"] is None
    assert db.session.query(AuditEntry).count() == 0


def test_settings_refuse_unknown_fields_and_bodies_that_are_not_json(client, admin):
    r = client.patch("/api/v1/settings", json={"webhook": URL}, headers=admin)
    assert r.status_code == 400 and r.json["error"]["field"] == "webhook"
    r = client.patch("/api/v1/settings", data="not json", headers=admin)
    assert r.status_code == 400


def test_settings_are_for_admins_only(client, marketer):
    assert client.get("/api/v1/settings", headers=marketer).status_code == 403
    r = client.patch("/api/v1/settings", json={"alert_webhook_url": URL}, headers=marketer)
    assert r.status_code == 403
    assert db.session.scalar(select(Setting)) is None


def test_the_openapi_document_describes_alerts_and_settings(client, ctx):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert set(paths["/api/v1/alerts"]) == {"get"}
    assert set(paths["/api/v1/settings"]) == {"get", "patch"}
    patch = paths["/api/v1/settings"]["patch"]
    body = patch["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["alert_webhook_url"]["type"] == ["string", "null"]
    assert {"400", "401", "403"} <= set(patch["responses"])


def test_a_webhook_no_key_opens_any_more_is_set_again_not_a_500(client, admin, app, caplog):
    """XTAG_ENCRYPTION_KEYS lost the key the stored URL was sealed with: the
    settings still show (the environment's URL applies), and it can be set again."""
    app.config["XTAG_ALERT_WEBHOOK_URL"] = "https://alerts.example.com/hook/from-the-environment"
    client.patch("/api/v1/settings", json={"alert_webhook_url": URL}, headers=admin)
    db.session.execute(update(Setting).values(value_encrypted="gAAAAA-not-a-fernet-token"))
    db.session.commit()
    r = client.get("/api/v1/settings", headers=admin)
    assert r.status_code == 200 and r.json["alert_webhook_url_source"] == "environment"
    assert alerts.webhook_url() == app.config["XTAG_ALERT_WEBHOOK_URL"]
    assert "cannot be decrypted" in caplog.text and TOKEN not in caplog.text
    r = client.patch("/api/v1/settings", json={"alert_webhook_url": URL}, headers=admin)
    assert r.status_code == 200 and alerts.webhook_url() == URL
