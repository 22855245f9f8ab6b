"""`/healthz`: the process answers. `/readyz`: the database and Redis answer
and a worker reported recently; 503 when not ready."""

from __future__ import annotations

import redis
from flask import jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from xtag import inbox, queue, worker
from xtag.extensions import db
from xtag.ops import bp


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
    try:
        connection = queue.redis_client()
        workers = worker.alive(connection)
        checks["redis"] = {"ok": True, "inbox_depth": inbox.depth(connection)}
        checks["workers"] = {"ok": bool(workers), "alive": len(workers)}
    except (redis.RedisError, OSError) as exc:
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
        checks["workers"] = {"ok": False, "alive": None}
    ready = all(check["ok"] for check in checks.values())
    response = jsonify(status="ready" if ready else "not ready", checks=checks)
    response.status_code = 200 if ready else 503
    return response
