"""Alerts and install-wide settings in the management API: the open alerts
for anyone signed in; the alert webhook for admins (write-only, masked)."""

from __future__ import annotations

import contextlib

import redis
from flask import g, jsonify

from xtag.api import openapi
from xtag.api.auth import requires
from xtag.api.views import bp, json_body
from xtag.pipeline import alerts
from xtag.services import settings


@bp.route("/alerts", methods=["GET"])
@requires("marketer")
def alerts_current():
    """Conditions going on now, the oldest first: checked afresh unless a
    worker is checking this moment (workers check every 30 s anyway)."""
    with contextlib.suppress(redis.RedisError, OSError):  # then as last checked
        alerts.check()
    return jsonify([alerts.as_json(alert) for alert in alerts.current()])


@bp.route("/settings", methods=["GET"])
@requires("admin")
def settings_read():
    return jsonify(settings.read())


@bp.route("/settings", methods=["PATCH"])
@requires("admin")
def settings_update():
    return jsonify(settings.update(g.api_user, json_body()))


ALERT = {
    "type": "object",
    "required": ["kind", "subject", "since", "message"],
    "properties": {
        "kind": {
            "type": "string",
            "enum": [
                "connection_failing",
                "pixel_failing",
                "site_silent",
                "match_quality_drop",
                "dead_letters",
            ],
        },
        "subject": {
            "type": "string",
            "description": "what it is about: connection:<id>, pixel:<id>, site:<id> or inbox",
        },
        "since": {"type": "string", "format": "date-time"},
        "message": {"type": "string"},
    },
}
SETTINGS_OUT = {
    "type": "object",
    "required": ["alert_webhook_url", "alert_webhook_url_source"],
    "properties": {
        "alert_webhook_url": settings.SETTINGS.fields[0].openapi(),
        **settings.SETTINGS.extra,
    },
}

openapi.declare(
    "/api/v1/alerts",
    {
        "get": {
            "summary": "Current alerts: [{kind, subject, since, message}]",
            "responses": {
                "200": {
                    "description": "open alerts, the oldest first",
                    **openapi.json_content({"type": "array", "items": ALERT}),
                },
                **openapi.errors(401),
            },
        }
    },
)
openapi.declare(
    "/api/v1/settings",
    {
        "get": {
            "summary": "Install-wide settings, secrets masked (admin)",
            "responses": {
                "200": {"description": "settings", **openapi.json_content(SETTINGS_OUT)},
                **openapi.errors(401, 403),
            },
        },
        "patch": {
            "summary": "Change settings; alert_webhook_url null goes back to "
            "XTAG_ALERT_WEBHOOK_URL (admin)",
            "requestBody": {
                "required": True,
                **openapi.json_content(settings.SETTINGS.openapi_input(partial=True)),
            },
            "responses": {
                "200": {"description": "changed", **openapi.json_content(SETTINGS_OUT)},
                **openapi.errors(400, 401, 403),
            },
        },
    },
)
