"""What browser SDKs fetch before they send: Segment's CDN settings and
RudderStack's source config, each pointing the SDK at this collector and
switching off everything that would call the vendor's own hosts."""

from __future__ import annotations

from flask import jsonify, request

from xtag.collector.views import bp, refusal, site_for
from xtag.core.messages import Rejected


def _segment_settings(write_key: str) -> dict:
    """analytics-next's settings: its Segment.io destination posts to
    <protocol>://<apiHost>/<t|p|i|b|...>, i.e. this collector's /v1/."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{request.host}/v1",
                "protocol": request.scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},  # no metrics to Segment's API
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def _rudderstack_config(write_key: str, site_id: int) -> dict:
    """RudderStack v3's source config: enabled, no device-mode destinations,
    no error or metrics reporting to RudderStack."""
    return {
        "isHosted": False,
        "source": {
            "id": f"xtag-site-{site_id}",
            "name": "xtag",
            "writeKey": write_key,
            "workspaceId": "xtag",
            "enabled": True,
            "config": {
                "statsCollection": {"errors": {"enabled": False}, "metrics": {"enabled": False}}
            },
            "destinations": [],
        },
    }


@bp.route("/v1/projects/<write_key>/settings", methods=["GET"])
def segment_settings(write_key: str):
    try:
        site_for(write_key)
    except Rejected as exc:
        return refusal(str(exc), exc.code)
    return jsonify(_segment_settings(write_key))


@bp.route("/sourceConfig/", methods=["GET"])
@bp.route("/sourceConfig", methods=["GET"])
def rudderstack_source_config():
    auth = request.authorization
    write_key = request.args.get("writeKey") or (auth.username if auth else "") or ""
    try:
        site = site_for(write_key)
    except Rejected as exc:
        return refusal(str(exc), exc.code)
    return jsonify(_rudderstack_config(write_key, site.id))
