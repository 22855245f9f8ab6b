"""`/healthz`: the process answers. `/readyz`: the database and Redis answer
and a worker reported recently; 503 when not ready."""

from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory
from prometheus_client import CONTENT_TYPE_LATEST

from xtag.services import monitoring

bp = Blueprint("ops", __name__)


@bp.route("/metrics")
def metrics_page():
    """Prometheus text format, for addresses in XTAG_METRICS_ALLOW or with
    the bearer token XTAG_METRICS_TOKEN."""
    config = current_app.config
    token = config["XTAG_METRICS_TOKEN"]
    given = request.headers.get("Authorization", "")
    address = ipaddress.ip_address(request.remote_addr or "0.0.0.0")
    allowed = any(address in network for network in config["XTAG_METRICS_ALLOW"])
    if not allowed and not (token and hmac.compare_digest(given, f"Bearer {token}")):
        response = jsonify(
            error="metrics are served to XTAG_METRICS_ALLOW addresses, "
            "or with Authorization: Bearer <XTAG_METRICS_TOKEN>"
        )
        response.status_code = 401 if token else 403
        return response
    body = monitoring.exposition(config["XTAG_READY_WORKER_SECONDS"])
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


@bp.route("/favicon.ico")
def favicon():
    """For pages that name no icon (browsers ask for this one)."""
    return send_from_directory(current_app.static_folder, "favicon.svg", max_age=86400)


@bp.route("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.route("/readyz")
def readyz():
    ready, checks = monitoring.readiness(current_app.config["XTAG_READY_WORKER_SECONDS"])
    response = jsonify(status="ready" if ready else "not ready", checks=checks)
    response.status_code = 200 if ready else 503
    return response
