"""The collector's hot routes as a plain WSGI callable: POST /v1/<route> (and
analytics-next's one-letter paths), RudderStack's beacon, and their CORS
preflights. Read, authenticate, check the origin, hand off, answer.

Every event a site sends comes through here, so it skips what a Flask view
costs per request (request and app objects, routing, response objects,
hooks): the work is the collector's own. Its rules live in xtag.core
(messages, events) and xtag.collector.edge; the hand-off in
xtag.pipeline.inbox. Any other path under the collector's prefixes goes on to
the collector's Flask app (SDK settings, scripts, and the 404s)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Flask
from werkzeug.exceptions import (
    ClientDisconnected,
    InternalServerError,
    MethodNotAllowed,
    NotFound,
)
from werkzeug.http import HTTP_STATUS_CODES, dump_cookie
from werkzeug.routing import Map, RequestRedirect, Rule
from werkzeug.sansio.http import parse_cookie
from werkzeug.wsgi import get_content_length, get_input_stream

from xtag.collector import edge
from xtag.core import fastjson
from xtag.core.events import prepare
from xtag.core.identity import clean_twclid, twclid_from_cookie
from xtag.core.messages import (
    BATCH_LIMIT,
    MESSAGE_LIMIT,
    Decoded,
    Rejected,
    RequestFacts,
    SiteRules,
    TooLarge,
    decode_body,
    messages_of,
    validate,
)
from xtag.pipeline import counters, inbox

log = logging.getLogger(__name__)

# Segment's HTTP API routes, plus the one-letter paths analytics.js 2.0
# (analytics-next) posts to when its apiHost points here.
ROUTES = {
    "track": "track", "page": "page", "identify": "identify", "batch": "batch",
    "screen": "screen", "group": "group", "alias": "alias",
    "t": "track", "p": "page", "i": "identify", "b": "batch", "s": "screen", "g": "group",
    "a": "alias",
}  # fmt: skip
BEACON = "/beacon/v1/batch"  # RudderStack's beacon transport (sendBeacon, key in the query)
PATHS = {f"/v1/{path}": route for path, route in ROUTES.items()} | {BEACON: "batch"}
# The same paths as rules, for what an exact look-up misses: a wrong method
# (405) and a doubled slash (a redirect), as Werkzeug routing answers them.
URLS = Map(
    [
        Rule(f"/v1/<any({', '.join(ROUTES)}):route>", methods=["POST", "OPTIONS"]),
        Rule(BEACON, methods=["POST", "OPTIONS"]),
    ]
)

TWCLID_COOKIE = "_xtag_twclid"
X_TWCLID_COOKIE = "_twclid"  # set by X's own pixel and server-side tag
TWCLID_COOKIE_SECONDS = 30 * 24 * 3600
COOKIE_MAX_SIZE = 4093  # Werkzeug's, as a Flask response would warn
RETRY_AFTER_SECONDS = 5
SUCCESS = b'{"success":true}\n'
JSON = ("Content-Type", "application/json")
STATUS_LINES = {code: f"{code} {name.upper()}" for code, name in HTTP_STATUS_CODES.items()}

StartResponse = Callable[..., Any]


class Answer:
    """What the WSGI collector answers: a status, headers and a body; `routed`: for
    one of its routes (CORS headers apply), not a routing error."""

    __slots__ = ("status", "headers", "body", "routed", "origin_allowed")

    def __init__(
        self, status: int, headers: list[tuple[str, str]], body: bytes = b"", routed: bool = True
    ):
        self.status, self.headers, self.body, self.routed = status, headers, body, routed
        self.origin_allowed = False  # answers may carry Access-Control-Allow-Credentials


class Collector:
    """The WSGI callable in front of the collector's Flask app `app`: it
    serves the hot routes itself, in `app`'s context (its config, database
    engine and Redis client), and passes every other request on to `app`."""

    def __init__(self, app: Flask):
        self.app = app
        self.fallback = app.wsgi_app

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        route = PATHS.get(environ.get("PATH_INFO", ""))
        if route is None:
            return self._elsewhere(environ, start_response)
        method = environ.get("REQUEST_METHOD", "").upper()
        if method == "OPTIONS":  # a CORS preflight: any origin may ask
            answer = Answer(204, [("Content-Type", "text/html; charset=utf-8")])
        else:
            with self.app.app_context():
                answer = self._answer(environ, route if method == "POST" else None)
        return self._send(environ, start_response, answer)

    def _answer(self, environ: dict, route: str | None) -> Answer:
        if route is None:
            return not_allowed()
        try:
            return self._collect(environ, route)
        except Exception:
            propagate = self.app.config["PROPAGATE_EXCEPTIONS"]  # as Flask decides it
            if propagate or (propagate is None and (self.app.testing or self.app.debug)):
                raise
            log.exception("Exception on %s [POST]", environ.get("PATH_INFO"))
            return refusal(None, InternalServerError.description, "invalid", status=500)

    def _collect(self, environ: dict, route: str) -> Answer:
        site_id, origin_allowed = None, False
        try:
            decoded = decode_body(read_body(environ), environ.get("HTTP_CONTENT_ENCODING"))
            site = edge.find_site(self.app, environ, edge.write_key(environ, decoded.body))
            site_id = site.id
            edge.check_origin(environ, site)
            origin_allowed = True
            answer = self._queue(environ, decoded, route, site)
        except Rejected as exc:
            answer = refusal(site_id, str(exc), exc.code, getattr(exc, "retry_after", None))
        answer.origin_allowed = origin_allowed
        return answer

    def _queue(self, environ: dict, decoded: Decoded, route: str, site: SiteRules) -> Answer:
        cookies = parse_cookie(environ.get("HTTP_COOKIE")) if "HTTP_COOKIE" in environ else {}
        events, refused = _events(decoded, route, site, request_facts(environ, cookies))
        limit = site.rate_limit or self.app.config["XTAG_SITE_RATE_LIMIT"]
        try:
            entry_id = inbox.accept(events, f"site:{site.id}", limit, environ.get("REMOTE_ADDR"))
        except inbox.OverLimit as exc:
            message = (
                f"this site sends more than {limit} events per second beyond a "
                f"{inbox.BURST_SECONDS}-second burst (this address the most); retry later"
            )
            return refusal(site.id, message, "rate_limited", exc.retry_after)
        except (redis.RedisError, OSError) as exc:
            log.warning(
                "collector could not queue %d events for site %s: %s", len(events), site.id, exc
            )
            message = "cannot queue the event right now; retry later"
            return refusal(site.id, message, "unavailable", RETRY_AFTER_SECONDS)
        counters.EVENTS_RECEIVED.labels(site.id).inc(len(events))
        log.debug("queued %d events for site %s as %s", len(events), site.id, entry_id)
        if refused:
            log.info("refused %d of the batch's messages for site %s", len(refused), site.id)
        return accepted(environ, events, refused, site.id, cookies.get(TWCLID_COOKIE))

    def _elsewhere(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        """A path the exact look-up missed: the collector app's, unless it is
        one of this collector's with a wrong method or a doubled slash."""
        try:
            URLS.bind_to_environ(environ).match()
        except NotFound:
            return self.fallback(environ, start_response)
        except MethodNotAllowed:
            with self.app.app_context():
                return self._send(environ, start_response, not_allowed())
        except RequestRedirect as redirect:
            return redirect.get_response(environ)(environ, start_response)
        return self.fallback(environ, start_response)  # not reached: PATHS has every match

    @staticmethod
    def _send(environ: dict, start_response: StartResponse, answer: Answer) -> Iterable[bytes]:
        headers = answer.headers
        if answer.routed and "HTTP_ORIGIN" in environ:
            headers += edge.cors_headers(environ, answer.status, answer.origin_allowed)
        start_response(STATUS_LINES[answer.status], headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [answer.body]


def read_body(environ: dict) -> bytes:
    """The request body, at most BATCH_LIMIT bytes (as Werkzeug streams it:
    a chunked body when the server ends it, none without a length)."""
    length = get_content_length(environ)
    if length is not None and length > BATCH_LIMIT:
        raise TooLarge(f"body is {length} bytes; a request may be at most 500 KB")
    try:
        raw = get_input_stream(environ).read(BATCH_LIMIT + 1 if length is None else length)
    except ClientDisconnected:
        raise Rejected("body ended early") from None
    if len(raw) > BATCH_LIMIT:
        raise TooLarge("body is over 500 KB; a request may be at most 500 KB")
    return raw


def request_facts(environ: dict, cookies: Any) -> RequestFacts:
    """What the request itself says about the sender."""
    user_agent = environ.get("HTTP_USER_AGENT", "").strip()[:512] or None
    return RequestFacts(
        ip=environ.get("REMOTE_ADDR"),
        user_agent=user_agent,
        cookie_twclid=twclid_from_cookie(cookies.get(TWCLID_COOKIE))
        or twclid_from_cookie(cookies.get(X_TWCLID_COOKIE)),
        gpc=environ.get("HTTP_SEC_GPC", "").strip() == "1",
        received_at=datetime.now(UTC),
        browser=bool(environ.get("HTTP_ORIGIN") or environ.get("HTTP_REFERER"))
        or (user_agent or "").startswith("Mozilla/"),
    )


def _events(
    decoded: Decoded, route: str, site: SiteRules, facts: RequestFacts
) -> tuple[list, list]:
    """The events to queue, and (for a batch) the messages refused, by index."""
    small = decoded.size <= MESSAGE_LIMIT  # then no message in it can be over the limit
    events, refused, first = [], [], None
    for index, (path, message) in enumerate(messages_of(decoded.body, route)):
        try:
            kind = validate(message, path, route, small, decoded.storable, decoded.shallow)
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


def accepted(
    environ: dict, events: list[dict], refused: list[dict], site_id: int, cookie: str | None
) -> Answer:
    """200, with the refused messages of a batch, and the twclid cookie when
    the request brought a click id the browser does not hold yet."""
    if not refused:
        body = SUCCESS
    else:
        edge.note_refusals(site_id, 400, [r["error"] for r in refused])
        body = (fastjson.dumps({"success": True, "refused": refused}) + "\n").encode()
    headers = [JSON, ("Content-Length", str(len(body)))]
    twclid = next(
        (e["identifiers"]["twclid"] for e in events if "twclid" in e["identifiers"]), None
    )
    if twclid and twclid != clean_twclid(cookie):
        secure = environ.get("wsgi.url_scheme") in ("https", "wss")
        cookie_line = dump_cookie(
            TWCLID_COOKIE,
            twclid,
            max_age=TWCLID_COOKIE_SECONDS,
            path="/",
            secure=secure,
            samesite="Lax",
            max_size=COOKIE_MAX_SIZE,
            sync_expires=False,  # Max-Age alone, as browsers read it: no date to format
        )
        headers.append(("Set-Cookie", cookie_line))
    return Answer(200, headers, body)


def refusal(
    site_id: int | None,
    message: str,
    code: str,
    retry_after: int | None = None,
    status: int | None = None,
) -> Answer:
    """Every non-2xx answer of the WSGI collector, noted for the site."""
    status = status or edge.STATUS.get(code, 400)
    edge.note_refusals(site_id, status, [message])
    body = edge.refusal_body(message, code)
    headers = [JSON, ("Content-Length", str(len(body)))]
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    return Answer(status, headers, body)


def not_allowed() -> Answer:
    """A method the route does not take: a routing error, so no CORS headers."""
    answer = refusal(None, MethodNotAllowed.description, "invalid", status=405)
    answer.routed = False
    return answer
