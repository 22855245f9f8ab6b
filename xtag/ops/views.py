"""`/healthz`: the process answers. `/readyz`: the database and Redis answer
and a worker reported recently; 503 when not ready."""

from __future__ import annotations

import hmac
import ipaddress

from flask import Response, current_app, jsonify, request, send_from_directory
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from xtag import metrics, queue, stats
from xtag.extensions import db
from xtag.ops import bp


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
    body = metrics.exposition(queue.redis_client(), db.session, config["XTAG_READY_WORKER_SECONDS"])
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
    checks: dict[str, dict] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except SQLAlchemyError as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    finally:
        db.session.remove()
    queues = stats.queues(queue.redis_client(), current_app.config["XTAG_READY_WORKER_SECONDS"])
    if queues is None:
        checks["redis"] = {"ok": False, "error": "unreachable"}
        checks["workers"] = {"ok": False, "alive": None}
    else:
        checks["redis"] = {"ok": True, "inbox_depth": queues["inbox_depth"]}
        checks["workers"] = {"ok": bool(queues["workers_alive"]), "alive": queues["workers_alive"]}
    ready = all(check["ok"] for check in checks.values())
    response = jsonify(status="ready" if ready else "not ready", checks=checks)
    response.status_code = 200 if ready else 503
    return response
