"""Install-wide settings an admin changes (the alert webhook): shown masked,
checked, stored encrypted and audited, the same from the admin and the API."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from xtag.core.fields import Field, Schema
from xtag.extensions import db
from xtag.models import User
from xtag.pipeline import alerts
from xtag.services.changes import SECRET, audit
from xtag.services.resources import mask

CLEARED = "cleared"  # the audit log's word for a webhook URL removed


def masked_url(url: str | None) -> str | None:
    """Scheme and host, then the mask: which service, never the path (Slack's token)."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/{mask(url)}"


SETTINGS = Schema(
    "Settings",
    (
        Field(
            "alert_webhook_url",
            "string",
            'where alerts are posted as {"text": ...} (Slack-compatible); write-only, shown '
            "masked; null: XTAG_ALERT_WEBHOOK_URL",
            nullable=True,
            max_length=alerts.URL_MAX,
            check=alerts.check_webhook_url,
            show=masked_url,
            example="https://hooks.slack.com/services/T000/B000/XXXX",
        ),
    ),
    extra={
        "alert_webhook_url_source": {
            "type": ["string", "null"],
            "enum": ["setting", "environment", None],
            "readOnly": True,
            "description": "setting: set here; environment: XTAG_ALERT_WEBHOOK_URL; null: none",
        }
    },
    has_id=False,
)


def read() -> dict:
    """The settings as the API and the admin show them (secrets masked)."""
    stored = alerts.stored_webhook_url()
    default = current_app.config.get("XTAG_ALERT_WEBHOOK_URL")
    shown = SETTINGS.dump(SimpleNamespace(alert_webhook_url=stored or default))
    shown["alert_webhook_url_source"] = "setting" if stored else "environment" if default else None
    return shown


def update(actor: User | None, data: Any) -> dict:
    """Change settings (PATCH: only those given); audited without their values."""
    values = SETTINGS.clean(data, partial=True)
    if "alert_webhook_url" in values:
        url = values["alert_webhook_url"]
        alerts.store_webhook_url(url)
        change = SECRET if url is not None else CLEARED
        audit(actor, "update", "settings", "alert_webhook_url", {"alert_webhook_url": change})
    db.session.commit()
    return read()
