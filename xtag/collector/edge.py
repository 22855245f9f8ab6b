"""The collector's HTTP rules, read from the WSGI environ so that the plain
WSGI collector (xtag.collector.wsgi) and the Flask views (SDK settings,
scripts) share one of each: where the write key is, which site it names,
whether the page's origin may send, what a refusal says and counts, and the
CORS headers of an answer."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from xtag import logs
from xtag.core.messages import Rejected, SiteRules
from xtag.pipeline import counters
from xtag.services import limits, refusals, writekeys


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

MISSING_KEY = (
    "missing write key: send it as the HTTP Basic username, as writeKey in the body "
    "or as the writeKey query parameter"
)
DEFAULT_HEADERS = (
    "Authorization, Content-Type, Content-Encoding, AnonymousId, SentAt, X-Retry-Count"
)
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")


def basic_username(environ: dict) -> str:
    """The HTTP Basic username, read as Werkzeug reads `request.authorization`
    ('' when there is none or the header is not Basic)."""
    header = environ.get("HTTP_AUTHORIZATION")
    if not header:
        return ""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return base64.b64decode(rest.strip(" \t"), validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeError):
        return ""


def query_value(environ: dict, name: str) -> str | None:
    """The first value of a query parameter (bytes that are not UTF-8 are
    replaced, never an error)."""
    query = environ.get("QUERY_STRING")
    if not query:
        return None
    text = query.encode("latin-1", "replace").decode("utf-8", "replace")
    for key, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
        if key == name:
            return value
    return None


def write_key(environ: dict, body: dict) -> str:
    """The write key: HTTP Basic username, else `writeKey` in the body, else
    in the query."""
    key = basic_username(environ)
    if key:
        return key
    key = body.get("writeKey")
    if isinstance(key, str) and key:
        return key
    key = query_value(environ, "writeKey")
    if key:
        return key
    raise Unauthorized(MISSING_KEY)


def find_site(app: Any, environ: dict, key: str) -> SiteRules:
    """The site of a write key, from the per-process cache; lookups of keys
    no cache knows are limited per address."""
    address = environ.get("REMOTE_ADDR")

    def throttle() -> None:
        wait = limits.unknown_key_wait(address)
        if wait:
            raise TooManyLookups("too many unknown write keys from this address; retry later", wait)

    site = writekeys.lookup(
        app.extensions["xtag_engine"],
        key,
        app.config["XTAG_SITE_CACHE_SECONDS"],
        before_query=throttle,
    )
    if site is None:
        raise Unauthorized("unknown write key")
    logs.bind(site=site.id)
    return site


def check_origin(environ: dict, site: SiteRules) -> None:
    """Browsers' pages may send only from the site's allowed origins (none
    listed: any); server SDKs send no Origin."""
    origin = environ.get("HTTP_ORIGIN")
    if origin and site.allowed_origins and origin.rstrip("/").lower() not in site.allowed_origins:
        raise ForbiddenOrigin(f"origin {origin} is not allowed for this site")


def refusal_body(message: str, code: str) -> bytes:
    """Every non-2xx answer's body: `error` for Segment's SDKs, `code` and
    `message` for those (RudderStack's, analytics-python) that read them."""
    body = json.dumps({"code": code, "error": message, "message": message}, separators=(",", ":"))
    return (body + "\n").encode()


def note_refusals(site_id: int | None, status: int, reasons: list[str]) -> None:
    """Count refusals, and keep them for the site (or as unknown) so that a
    set-up can be debugged without the server log."""
    counters.COLLECTOR_REFUSED.labels(status).inc(len(reasons))
    refusals.record(site_id, [(status, reason) for reason in reasons])


def allowed_headers(environ: dict) -> str:
    """The headers the browser asks to send (SDKs add their own: AnonymousId,
    SentAt, X-Retry-Count, ...), when they are well-formed header names."""
    asked = [h.strip() for h in environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "").split(",")]
    asked = [h for h in asked if h]
    if asked and all(HEADER_NAME.match(h) for h in asked):
        return ", ".join(asked)
    return DEFAULT_HEADERS


def cors_headers(environ: dict, status: int, origin_allowed: bool) -> list[tuple[str, str]]:
    """Preflights are answered for any origin (the site is not known yet);
    a real answer names the origin only once the site allows it, and lets
    the page send cookies (Allow-Credentials) only with a success."""
    origin = environ.get("HTTP_ORIGIN")
    if not origin:
        return []
    if environ.get("REQUEST_METHOD", "").upper() == "OPTIONS":
        headers = [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Headers", allowed_headers(environ)),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Max-Age", "86400"),
        ]
    elif origin_allowed:
        headers = [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Expose-Headers", "Retry-After"),
        ]
        if status < 400:
            headers.append(("Access-Control-Allow-Credentials", "true"))
    else:
        headers = []
    headers.append(("Vary", "Origin"))
    return headers
