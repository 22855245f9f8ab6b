"""What browser SDKs fetch before they send: Segment's CDN settings and
RudderStack's source config, each pointing the SDK at this collector and
switching off everything that would call the vendor's own hosts."""

from __future__ import annotations

import re
from pathlib import Path

from flask import jsonify, request, send_from_directory

from xtag.collector.views import bp, check_origin, refusal, site_for
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
        check_origin(site_for(write_key))
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
        check_origin(site)
    except Rejected as exc:
        return refusal(str(exc), exc.code)
    return jsonify(_rudderstack_config(write_key, site.id))


# analytics-next's standalone build (static/vendor/analytics-next, from npm):
# Segment's standard snippet with analytics._cdn = this collector loads it,
# then its chunks, from here instead of Segment's CDN.
VENDORED = Path(__file__).resolve().parents[2] / "static" / "vendor" / "analytics-next"
STANDALONE = "standalone.js"
CHUNK = re.compile(r"^[\w-]+\.bundle\.[0-9a-f]+\.js$")


def _vendored(filename: str):
    response = send_from_directory(VENDORED, filename, max_age=3600)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.route("/analytics.js/v1/<write_key>/analytics.min.js", methods=["GET"])
def analytics_js(write_key: str):
    try:
        site_for(write_key)
    except Rejected as exc:
        return refusal(str(exc), exc.code)
    return _vendored(STANDALONE)


@bp.route("/analytics-next/bundles/<filename>", methods=["GET"])
def analytics_next_chunk(filename: str):
    if not CHUNK.match(filename):
        return refusal(f"no analytics-next chunk {filename}", "not_found")
    return _vendored(filename)
