"""The admin's Settings page: the alert webhook set, replaced and cleared,
never shown in full; the open alerts listed; admins only."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from tests.support import factories
from tests.support.web import login
from xtag.extensions import db
from xtag.models import AuditEntry, Site, utcnow
from xtag.pipeline import alerts

TOKEN = "xoxb-alert-hook-secret-0c4d9b"
URL = f"https://hooks.slack.com/services/T000/B000/{TOKEN}"


def test_an_admin_sets_replaces_and_clears_the_webhook(client, ctx):
    login(client, "admin")
    page = client.get("/").get_data(as_text=True)
    assert 'href="/settings"' in page  # in the navigation
    page = client.get("/settings").get_data(as_text=True)
    assert "Alert webhook" in page and "posted nowhere" in page

    r = client.post("/settings", data={"alert_webhook_url": URL}, follow_redirects=True)
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "Alert webhook saved" in page
    assert "https://hooks.slack.com/****" in page and TOKEN not in page
    assert alerts.webhook_url() == URL

    r = client.post("/settings", data={"alert_webhook_url": "ftp://hooks.example.com/x"})
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "must be an http or https URL" in page
    assert alerts.webhook_url() == URL  # unchanged

    r = client.post("/settings/clear-webhook", follow_redirects=True)
    assert "Alert webhook cleared" in r.get_data(as_text=True)
    assert alerts.webhook_url() is None
    changes = [e.changes for e in db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert changes == [{"alert_webhook_url": "changed"}, {"alert_webhook_url": "cleared"}]


def test_the_page_lists_the_open_alerts(client, ctx):
    site = factories.site(name="Blog", silence_alert_hours=2)
    db.session.execute(
        update(Site).where(Site.id == site.id).values(last_event_at=utcnow() - timedelta(hours=5))
    )
    db.session.commit()
    login(client, "admin")
    assert "None: every connection, pixel and site" in client.get("/settings").get_data(
        as_text=True
    )
    alerts.check()
    page = client.get("/settings").get_data(as_text=True)
    assert "site silent" in page and "Site &#34;Blog&#34; has received no events since" in page


def test_marketers_cannot_see_or_change_settings(client, ctx):
    login(client, "marketer")
    assert 'href="/settings"' not in client.get("/").get_data(as_text=True)
    assert client.get("/settings").status_code == 403
    assert client.post("/settings", data={"alert_webhook_url": URL}).status_code == 403
    assert client.post("/settings/clear-webhook").status_code == 403
    assert alerts.webhook_url() is None


def test_signed_out_visitors_are_sent_to_the_login(client, ctx):
    r = client.get("/settings")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
