"""HTTP edge of the collector: read, authenticate, check origin, hand off.

All rules live in xtag.core (messages, events); this module only moves data between
the request, the site cache and the inbox, and turns refusals into answers.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from xtag import logs
from xtag.core import fastjson
from xtag.core.events import prepare
from xtag.core.identity import clean_twclid, twclid_from_cookie
from xtag.core.messages import (
    BATCH_LIMIT,
    MESSAGE_LIMIT,
    Rejected,
    RequestFacts,
    SiteRules,
    TooLarge,
    decode_body,
    messages_of,
    validate,
)
from xtag.pipeline import counters, inbox
from xtag.services import limits, refusals, writekeys

log = logging.getLogger(__name__)
bp = Blueprint("collector", __name__)


class Unauthorized(Rejected):
    """No write key, or one no site has."""

    code = "unauthorized"


class TooManyLookups(Rejected):
    """An address trying write keys no cache knows, faster than a site would."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ForbiddenOrigin(Rejected):
    """A page whose origin the site does not allow."""

    code = "forbidden_origin"


# a refusal's code -> its HTTP status (every other code is a 400)
STATUS = {"too_large": 413, "unsupported_encoding": 415, "unauthorized": 401}
STATUS |= {"forbidden_origin": 403, "rate_limited": 429, "unavailable": 503, "not_found": 404}

TWCLID_COOKIE = "_xtag_twclid"
X_TWCLID_COOKIE = "_twclid"  # set by X's own pixel and server-side tag
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
DEFAULT_HEADERS = (
    "Authorization, Content-Type, Content-Encoding, AnonymousId, SentAt, X-Retry-Count"
)
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")


def refusal(message: str, code: str, retry_after: int | None = None, status: int | None = None):
    """Every non-2xx answer: `error` for Segment's SDKs, `code` and `message`
    for those (RudderStack's, analytics-python) that read them; noted for the
    site (or as unknown) so a set-up can be debugged without the server log."""
    status = status or STATUS.get(code, 400)
    counters.COLLECTOR_REFUSED.labels(status).inc()
    refusals.record(g.get("site_id"), [(status, message)])
    response = jsonify(error=message, code=code, message=message)
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


HTTP_CODES = {404: "not_found", 413: "too_large", 415: "unsupported_encoding"}


def http_error(error: HTTPException):
    """Routing and protocol errors (an unknown path, a wrong method) answer
    like every other refusal of the collector."""
    code = HTTP_CODES.get(error.code, "invalid")
    return refusal(error.description or error.name, code, status=error.code)


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
    for key in (body.get("writeKey"), request.args.get("writeKey")):
        if isinstance(key, str) and key:
            return key
    raise Unauthorized(
        "missing write key: send it as the HTTP Basic username, as writeKey in the body "
        "or as the writeKey query parameter"
    )


def _throttle_lookups() -> None:
    wait = limits.unknown_key_wait(request.remote_addr)
    if wait:
        raise TooManyLookups("too many unknown write keys from this address; retry later", wait)


def site_for(write_key: str) -> SiteRules:
    site = writekeys.lookup(
        current_app.extensions["xtag_engine"],
        write_key,
        current_app.config["XTAG_SITE_CACHE_SECONDS"],
        before_query=_throttle_lookups,
    )
    if site is None:
        raise Unauthorized("unknown write key")
    logs.bind(site=site.id)
    g.site_id = site.id
    return site


def check_origin(site: SiteRules) -> None:
    origin = request.headers.get("Origin")
    if origin and site.allowed_origins and origin.rstrip("/").lower() not in site.allowed_origins:
        raise ForbiddenOrigin(f"origin {origin} is not allowed for this site")
    g.origin_allowed = True  # answers may carry Access-Control-Allow-Credentials


def _facts() -> RequestFacts:
    user_agent = request.headers.get("User-Agent", "").strip()[:512] or None
    return RequestFacts(
        ip=request.remote_addr,
        user_agent=user_agent,
        cookie_twclid=twclid_from_cookie(request.cookies.get(TWCLID_COOKIE))
        or twclid_from_cookie(request.cookies.get(X_TWCLID_COOKIE)),
        gpc=request.headers.get("Sec-GPC", "").strip() == "1",
        received_at=datetime.now(UTC),
        browser=bool(request.headers.get("Origin") or request.headers.get("Referer"))
        or (user_agent or "").startswith("Mozilla/"),
    )


def _events(body: dict, size: int, route: str, site: SiteRules) -> tuple[list, list]:
    """The events to queue, and (for a batch) the messages refused, by index."""
    facts = _facts()
    small = size <= MESSAGE_LIMIT  # then no message in it can be over the limit
    events, refused, first = [], [], None
    for index, (path, message) in enumerate(messages_of(body, route)):
        try:
            kind = validate(message, path, route, small)
        except Rejected as exc:
            if route != "batch":
                raise
            refused.append({"index": index, "error": str(exc)})
            first = first or exc
            continue
        events.append(prepare(message, kind, site, facts))
    if not events:  # nothing in the batch can be used: the request as a whole is refused
        raise first
    return events, refused


def _accepted(events: list[dict], refused: list[dict]) -> Response:
    if not refused:
        response = Response(SUCCESS, mimetype="application/json")
    else:
        counters.COLLECTOR_REFUSED.labels(400).inc(len(refused))
        refusals.record(g.site_id, [(400, r["error"]) for r in refused])
        body = {
            "success": True,
            "refused": [{k: r[k] for k in ("index", "error")} for r in refused],
        }
        response = Response(fastjson.dumps(body) + "\n", mimetype="application/json")
    twclid = next(
        (e["identifiers"]["twclid"] for e in events if "twclid" in e["identifiers"]), None
    )
    if twclid and twclid != clean_twclid(request.cookies.get(TWCLID_COOKIE)):
        response.set_cookie(
            TWCLID_COOKIE,
            twclid,
            max_age=TWCLID_COOKIE_SECONDS,
            samesite="Lax",
            secure=request.is_secure,
        )
    return response


def _collect(route: str):
    body, size = decode_body(_read_body(), request.headers.get("Content-Encoding"))
    site = site_for(_write_key(body))
    check_origin(site)
    events, refused = _events(body, size, route, site)
    limit = site.rate_limit or current_app.config["XTAG_SITE_RATE_LIMIT"]
    try:
        entry_id = inbox.accept(events, f"site:{site.id}", limit, request.remote_addr)
    except inbox.OverLimit as exc:
        message = (
            f"this site sends more than {limit} events per second beyond a "
            f"{inbox.BURST_SECONDS}-second burst (this address the most); retry later"
        )
        return refusal(message, "rate_limited", exc.retry_after)
    except (redis.RedisError, OSError) as exc:
        log.warning(
            "collector could not queue %d events for site %s: %s", len(events), site.id, exc
        )
        message = "cannot queue the event right now; retry later"
        return refusal(message, "unavailable", RETRY_AFTER_SECONDS)
    counters.EVENTS_RECEIVED.labels(site.id).inc(len(events))
    log.debug("queued %d events for site %s as %s", len(events), site.id, entry_id)
    if refused:
        log.info("refused %d of the batch's messages for site %s", len(refused), site.id)
    return _accepted(events, refused)


def _endpoint(route: str):
    def view():
        try:
            return _collect(route)
        except Rejected as exc:
            return refusal(str(exc), exc.code, getattr(exc, "retry_after", None))

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
# RudderStack's beacon transport (navigator.sendBeacon, write key in the query)
bp.add_url_rule(
    "/beacon/v1/batch",
    endpoint="beacon_batch",
    view_func=_endpoint("batch"),
    methods=["POST"],
    provide_automatic_options=False,
)


@bp.route(f"/v1/<any({', '.join(ROUTES)}):route>", methods=["OPTIONS"])
@bp.route("/beacon/v1/batch", methods=["OPTIONS"])
@bp.route("/v1/projects/<write_key>/settings", methods=["OPTIONS"])
@bp.route("/sourceConfig/", methods=["OPTIONS"])
@bp.route("/sourceConfig", methods=["OPTIONS"])
def preflight(**_):
    """CORS preflight: any origin may ask; the site's allow-list is applied on
    the real request, once the write key says which site it is."""
    return "", 204


def _allowed_headers() -> str:
    """The headers the browser asks to send (SDKs add their own: AnonymousId,
    SentAt, X-Retry-Count, ...), when they are well-formed header names."""
    asked = [
        h.strip() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
    ]
    asked = [h for h in asked if h]
    if asked and all(HEADER_NAME.match(h) for h in asked):
        return ", ".join(asked)
    return DEFAULT_HEADERS


@bp.after_request
def cors(response):
    """Preflights are answered for any origin (the site is not known yet);
    a real answer names the origin only once the site allows it, and lets
    the page send cookies (Allow-Credentials) only with a success."""
    origin = request.headers.get("Origin")
    if not origin:
        return response
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = _allowed_headers()
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Max-Age"] = "86400"
    elif g.get("origin_allowed"):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        if response.status_code < 400:
            response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Vary"] = "Origin"
    return response
