"""HTTP edge of the collector: read, authenticate, check origin, hand off.

All rules live in xtag.core.messages; this module only moves data between
the request, the site cache and the inbox, and turns refusals into answers.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import ClientDisconnected

from xtag import logs
from xtag.core.identity import clean_twclid
from xtag.core.messages import (
    BATCH_LIMIT,
    MESSAGE_LIMIT,
    Rejected,
    RequestFacts,
    TooLarge,
    UnsupportedEncoding,
    decode_body,
    messages_of,
    prepare,
    validate,
)
from xtag.pipeline import counters, inbox
from xtag.services import writekeys

log = logging.getLogger(__name__)
bp = Blueprint("collector", __name__)


class Unauthorized(Rejected):
    """No write key, or one no site has."""


class ForbiddenOrigin(Rejected):
    """A page whose origin the site does not allow."""


STATUS = {TooLarge: 413, UnsupportedEncoding: 415, Unauthorized: 401, ForbiddenOrigin: 403}

TWCLID_COOKIE = "_xtag_twclid"
TWCLID_COOKIE_SECONDS = 30 * 24 * 3600
RETRY_AFTER_SECONDS = 5
SUCCESS = b'{"success":true}\n'
# Segment's HTTP API routes, plus the one-letter paths analytics.js 2.0
# (analytics-next) posts to when its apiHost points here.
ROUTES = {
    "track": "track", "page": "page", "identify": "identify", "batch": "batch",
    "screen": "screen", "group": "group", "alias": "alias",
    "t": "track", "p": "page", "i": "identify", "b": "batch", "s": "screen", "g": "group",
    "a": "alias",
}  # fmt: skip


def _error(message: str, status: int):
    counters.COLLECTOR_REFUSED.labels(status).inc()
    response = jsonify(error=message)
    response.status_code = status
    return response


def _retry_later(message: str, status: int, seconds: int):
    response = _error(message, status)
    response.headers["Retry-After"] = str(seconds)
    return response


def _read_body() -> bytes:
    if request.content_length is not None and request.content_length > BATCH_LIMIT:
        raise TooLarge(f"body is {request.content_length} bytes; a request may be at most 500 KB")
    try:
        raw = request.stream.read(BATCH_LIMIT + 1)
    except ClientDisconnected:
        raise Rejected("body ended early") from None
    if len(raw) > BATCH_LIMIT:
        raise TooLarge("body is over 500 KB; a request may be at most 500 KB")
    return raw


def _write_key(body: dict) -> str:
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username:
        return auth.username
    key = body.get("writeKey")
    if isinstance(key, str) and key:
        return key
    raise Unauthorized(
        "missing write key: send it as the HTTP Basic username or as writeKey in the body"
    )


def _facts() -> RequestFacts:
    return RequestFacts(
        ip=request.remote_addr,
        user_agent=request.headers.get("User-Agent", "").strip()[:512] or None,
        cookie_twclid=request.cookies.get(TWCLID_COOKIE),
        gpc=request.headers.get("Sec-GPC", "").strip() == "1",
        received_at=datetime.now(UTC),
    )


def _collect(route: str):
    body, size = decode_body(_read_body(), request.headers.get("Content-Encoding"))
    site = writekeys.lookup(
        current_app.extensions["xtag_engine"],
        _write_key(body),
        current_app.config["XTAG_SITE_CACHE_SECONDS"],
    )
    if site is None:
        raise Unauthorized("unknown write key")
    logs.bind(site=site.id)
    origin = request.headers.get("Origin")
    if origin and site.allowed_origins and origin.rstrip("/").lower() not in site.allowed_origins:
        raise ForbiddenOrigin(f"origin {origin} is not allowed for this site")
    facts = _facts()
    small = size <= MESSAGE_LIMIT  # then no message in it can be over the limit
    checked = [(validate(m, path, route, small), m) for path, m in messages_of(body, route)]
    events = [prepare(m, kind, site, facts) for kind, m in checked]
    limit = site.rate_limit or current_app.config["XTAG_SITE_RATE_LIMIT"]
    try:
        entry_id = inbox.accept(events, f"site:{site.id}", limit)
    except inbox.OverLimit as exc:
        message = f"this site sends more than {limit} events per second; retry later"
        return _retry_later(message, 429, exc.retry_after)
    except (redis.RedisError, OSError) as exc:
        log.warning(
            "collector could not queue %d events for site %s: %s", len(events), site.id, exc
        )
        return _retry_later(
            "cannot queue the event right now; retry later", 503, RETRY_AFTER_SECONDS
        )
    counters.EVENTS_RECEIVED.labels(site.id).inc(len(events))
    log.debug("queued %d events for site %s as %s", len(events), site.id, entry_id)
    response = Response(SUCCESS, mimetype="application/json")
    twclid = next(
        (e["identifiers"]["twclid"] for e in events if "twclid" in e["identifiers"]), None
    )
    if twclid and twclid != clean_twclid(facts.cookie_twclid):
        response.set_cookie(
            TWCLID_COOKIE,
            twclid,
            max_age=TWCLID_COOKIE_SECONDS,
            samesite="Lax",
            secure=request.is_secure,
        )
    return response


def _endpoint(route: str):
    def view():
        try:
            return _collect(route)
        except Rejected as exc:
            return _error(str(exc), STATUS.get(type(exc), 400))

    view.__name__ = route
    return view


for _path, _route in ROUTES.items():
    bp.add_url_rule(
        f"/v1/{_path}",
        endpoint=_path,
        view_func=_endpoint(_route),
        methods=["POST"],
        provide_automatic_options=False,
    )


@bp.route(f"/v1/<any({', '.join(ROUTES)}):route>", methods=["OPTIONS"])
def preflight(route: str):
    """CORS preflight: any origin may ask; the site's allow-list is applied on
    the real request, once the write key says which site it is."""
    return "", 204


@bp.after_request
def cors(response):
    origin = request.headers.get("Origin")
    if origin and response.status_code != 403:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, Content-Encoding"
            )
            response.headers["Access-Control-Max-Age"] = "86400"
    return response
