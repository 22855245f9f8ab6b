"""A realistic fake of X for the test suite: Ads Conversions API, OAuth 1.0a and OAuth 2.0.

`FakeX` is a real, threaded HTTP server on 127.0.0.1 (random free port) that follows the
contract in the shared spec (x-conversions-api.md):

- ``POST /{version}/measurement/conversions/{pixel_id}`` authenticated by exactly one of
  OAuth 1.0a HMAC-SHA1 (verified by oauthlib's server-side ``ResourceEndpoint``),
  ``X-Pixel-Token`` or ``Authorization: Bearer`` (the current OAuth 2.0 access token).
  Batches are validated like X does: all or nothing, 400 ``INVALID_PARAMETER``.
- ``POST /2/oauth2/token`` (refresh_token with rotation, authorization_code with PKCE)
  and ``GET /i/oauth2/authorize`` (approves at once and redirects back).
- ``POST /oauth/request_token``, ``GET /oauth/authorize`` (and ``/oauth/authenticate``),
  ``POST /oauth/access_token``: the 3-legged OAuth 1.0a flow, via oauthlib's endpoints.

Tests script it (``fail_next``, ``hang_next``, rate limits, ``reject_conversion_if``) and
inspect it (``requests``, ``accepted()``, ``refresh_count``, ``wait_for``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from oauthlib.oauth1 import (
    AccessTokenEndpoint,
    RequestTokenEndpoint,
    RequestValidator,
    ResourceEndpoint,
)
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response

MAX_CONVERSIONS = 500
OAUTH2_SCOPE = "ads_management offline.access"

_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_BASE36 = re.compile(r"[0-9a-z]+")
_LONG_EVENT = re.compile(r"tw-([0-9a-z]+)-([0-9a-z]+)")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")

_IDENTIFIER_KEYS = {"twclid", "hashed_email", "hashed_phone_number", "ip_address", "user_agent"}
_STRONG_IDENTIFIERS = {"twclid", "hashed_email", "hashed_phone_number"}
_CONVERSION_KEYS = {
    "conversion_time",
    "event_id",
    "identifiers",
    "number_items",
    "price_currency",
    "value",
    "conversion_id",
    "description",
    "contents",
}
_CONTENT_KEYS = {
    "content_id",
    "content_group_id",
    "content_name",
    "content_price",
    "content_type",
    "num_items",
}

_HTML_404 = (
    "<!DOCTYPE html>\n<html><head><title>Page not found / X</title></head>"
    "<body><h1>Not Found</h1><p>Sorry, that page does not exist.</p></body></html>\n"
)

_DEFAULT_ERROR_CODES = {
    400: ("INVALID_PARAMETER", "Invalid parameter"),
    401: ("UNAUTHORIZED", "This request is not properly authenticated"),
    403: (
        "UNAUTHORIZED_CLIENT_APPLICATION",
        "The client application making this request does not have access to Twitter Ads API",
    ),
    404: ("NOT_FOUND", "The requested resource could not be found"),
    408: ("REQUEST_TIMEOUT", "Request was cancelled"),
    423: ("LOCK_TIMEOUT", "Lock timeout"),
    429: ("TOO_MANY_REQUESTS", "Rate limit exceeded"),
    500: ("INTERNAL_ERROR", "An internal error occurred"),
    502: ("BAD_GATEWAY", "Bad gateway"),
    503: ("SERVICE_UNAVAILABLE", "Over capacity"),
    504: ("GATEWAY_TIMEOUT", "Gateway timeout"),
}

ENDPOINTS = (
    "conversions",
    "oauth2_token",
    "oauth2_authorize",
    "oauth1_request_token",
    "oauth1_authorize",
    "oauth1_access_token",
)


# --------------------------------------------------------------------------- records


@dataclass
class ReceivedRequest:
    """One HTTP request the fake received, and what it answered."""

    seq: int
    method: str
    path: str
    url: str
    endpoint: str  # one of ENDPOINTS, or "unknown"
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time()
    query: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None  # parsed JSON body (floats as float), None if not JSON
    version: str | None = None
    pixel_id: str | None = None
    # Credential presented: "oauth1" | "pixel_token" | "bearer" | "multiple" | another scheme
    # (e.g. "basic") | None; "oauth2_client" on the token endpoint.
    auth: str | None = None
    authenticated: bool | None = None  # None: not checked (scripted answer)
    auth_error: str | None = None
    scripted: bool = False  # answered by fail_next
    status: int | None = None  # None while still being processed (e.g. hang_next)
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    answered_at: float | None = None

    @property
    def conversions(self) -> list[dict]:
        if isinstance(self.json, dict) and isinstance(self.json.get("conversions"), list):
            return self.json["conversions"]
        return []

    @property
    def response_json(self) -> Any:
        try:
            return json.loads(self.response_body)
        except ValueError:
            return None


@dataclass
class _Scripted:
    endpoint: str
    remaining: int
    status: int = 0
    body: Any = None
    headers: dict[str, str] | None = None
    seconds: float = 0.0


@dataclass
class _Grant:
    """An OAuth 2.0 grant: one access token + refresh token pair that rotates."""

    client_id: str
    scope: str
    access_token: str
    refresh_token: str | None
    issued_at: float
    expired: bool = False


# --------------------------------------------------------------------------- validation


class _Problems:
    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def add(self, parameter: str, message: str) -> None:
        self.errors.append(
            {"code": "INVALID_PARAMETER", "message": message, "parameter": parameter}
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_decimal_with_point(value: Any) -> bool:
    """A string like "20.00", or a JSON number written with a decimal point (parsed as Decimal)."""
    if isinstance(value, str):
        return _DECIMAL.fullmatch(value) is not None
    if isinstance(value, Decimal):
        text = str(value)
        return value.is_finite() and value >= 0 and "." in text and "E" not in text.upper()
    return False


def _check_time(conversion: dict, where: str, problems: _Problems) -> None:
    value = conversion.get("conversion_time")
    if value is None:
        problems.add("conversion_time", f"{where}.conversion_time is required")
        return
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        problems.add(
            "conversion_time",
            f"{where}.conversion_time ({value}) must be ISO 8601 UTC with milliseconds and a Z, "
            "e.g. 2022-02-18T01:14:00.603Z",
        )
        return
    try:
        time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        problems.add("conversion_time", f"{where}.conversion_time ({value}) is not a valid time")


def _check_event(
    conversion: dict, where: str, pixel_id: str, known: set[str] | None, problems: _Problems
) -> None:
    value = conversion.get("event_id")
    if value is None:
        problems.add("event_id", f"{where}.event_id is required")
        return
    if not isinstance(value, str):
        problems.add("event_id", f"{where}.event_id must be a string")
        return
    long_form = _LONG_EVENT.fullmatch(value)
    if long_form:
        pixel, event = long_form.groups()
        if pixel != pixel_id:
            problems.add(
                "event_id", f"event_id ({value}) does not belong to the pixel {pixel_id} in the URL"
            )
            return
    elif _BASE36.fullmatch(value):
        event = value
    else:
        problems.add("event_id", f"event_id ({value}) is not a valid event id")
        return
    if known is not None and event not in known:
        problems.add("event_id", f"event_id ({value}) is not a single event tag (SET)")


def _check_identifier_value(key: str, value: Any, where: str, problems: _Problems) -> None:
    if not isinstance(value, str) or not value:
        problems.add(key, f"{where}.{key} must be a non-empty string")
    elif key in ("hashed_email", "hashed_phone_number") and not _SHA256_HEX.fullmatch(value):
        problems.add(key, f"{where}.{key} must be a SHA-256 hash: 64 lower-case hex characters")
    elif key == "ip_address":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            problems.add(key, f"{where}.ip_address ({value}) is not an IP address")


def _check_identifiers(conversion: dict, where: str, problems: _Problems) -> None:
    identifiers = conversion.get("identifiers")
    if identifiers is None:
        problems.add("identifiers", f"{where}.identifiers is required")
        return
    if not isinstance(identifiers, list) or not identifiers:
        problems.add("identifiers", f"{where}.identifiers must be a non-empty list of objects")
        return
    strong = False
    for j, identifier in enumerate(identifiers):
        here = f"{where}.identifiers[{j}]"
        if not isinstance(identifier, dict) or not identifier:
            problems.add("identifiers", f"{here} must be a non-empty object")
            continue
        for key, value in identifier.items():
            if key not in _IDENTIFIER_KEYS:
                problems.add(key, f"{here}.{key} is not a known identifier")
                continue
            strong = strong or key in _STRONG_IDENTIFIERS
            _check_identifier_value(key, value, here, problems)
    if not strong:
        problems.add(
            "identifiers",
            f"{where}.identifiers needs at least one of twclid, hashed_email or "
            "hashed_phone_number (ip_address and user_agent alone are not enough)",
        )


def _check_contents(conversion: dict, where: str, problems: _Problems) -> None:
    contents = conversion["contents"]
    if not isinstance(contents, list):
        problems.add("contents", f"{where}.contents must be a list of objects")
        return
    for j, content in enumerate(contents):
        here = f"{where}.contents[{j}]"
        if not isinstance(content, dict):
            problems.add("contents", f"{here} must be an object")
            continue
        for key, value in content.items():
            if key not in _CONTENT_KEYS:
                problems.add(key, f"{here}.{key} is not a known content parameter")
            elif key == "content_price":
                if not _is_decimal_with_point(value):
                    problems.add(key, f"{here}.content_price ({value}) must be a decimal like 9.99")
            elif key == "num_items":
                if not _is_int(value) or value <= 0:
                    problems.add(key, f"{here}.num_items ({value}) must be an integer > 0")
            elif not isinstance(value, str):
                problems.add(key, f"{here}.{key} must be a string")


def _check_optional(conversion: dict, where: str, problems: _Problems) -> None:
    if "number_items" in conversion:
        value = conversion["number_items"]
        if not _is_int(value) or value <= 0:
            problems.add("number_items", f"{where}.number_items ({value}) must be an integer > 0")
    if "price_currency" in conversion:
        value = conversion["price_currency"]
        if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
            problems.add(
                "price_currency", f"{where}.price_currency ({value}) must be an ISO-4217 code"
            )
    if "value" in conversion and not _is_decimal_with_point(conversion["value"]):
        problems.add("value", f"{where}.value ({conversion['value']}) must be a decimal like 20.00")
    for key in ("conversion_id", "description"):
        if key in conversion and not isinstance(conversion[key], str):
            problems.add(key, f"{where}.{key} must be a string")
    if "contents" in conversion:
        _check_contents(conversion, where, problems)


def validate_conversion(
    conversion: Any, where: str, pixel_id: str, known_events: set[str] | None = None
) -> list[dict[str, str]]:
    """X's rules for one conversion; returns error objects (empty when valid).

    Numbers in ``conversion`` should come from ``json.loads(..., parse_float=Decimal)``
    so that ``20.00`` (decimal point) and ``20`` (integer) can be told apart.
    """
    problems = _Problems()
    if not isinstance(conversion, dict):
        problems.add("conversions", f"{where} must be an object")
        return problems.errors
    for key in sorted(set(conversion) - _CONVERSION_KEYS):
        problems.add(key, f"{where}.{key} is not a known parameter")
    _check_time(conversion, where, problems)
    _check_event(conversion, where, pixel_id, known_events, problems)
    _check_identifiers(conversion, where, problems)
    _check_optional(conversion, where, problems)
    return problems.errors


def validate_batch(
    payload: Any, pixel_id: str, known_events: set[str] | None = None
) -> list[dict[str, str]]:
    """X's rules for a request body; returns error objects (empty when valid)."""
    problems = _Problems()
    if not isinstance(payload, dict):
        problems.add("conversions", "the body must be a JSON object with a conversions list")
        return problems.errors
    for key in sorted(set(payload) - {"conversions"}):
        problems.add(key, f"{key} is not a known parameter")
    conversions = payload.get("conversions")
    if not isinstance(conversions, list) or not conversions:
        problems.add("conversions", "conversions must be a list of 1 to 500 conversions")
        return problems.errors
    if len(conversions) > MAX_CONVERSIONS:
        problems.add(
            "conversions",
            f"conversions has {len(conversions)} items; at most {MAX_CONVERSIONS} are allowed",
        )
        return problems.errors
    for i, conversion in enumerate(conversions):
        problems.errors.extend(
            validate_conversion(conversion, f"conversions[{i}]", pixel_id, known_events)
        )
    return problems.errors


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# --------------------------------------------------------------------------- OAuth 1.0a


class _OAuth1Validator(RequestValidator):
    """oauthlib's server-side policy, backed by the fake's state."""

    def __init__(self, fake: FakeX) -> None:
        super().__init__()
        self.fake = fake

    # Real X keys/tokens don't fit oauthlib's defaults (20-30 alphanumerics): access tokens
    # look like "<user id>-<random>" and are ~50 characters.
    @property
    def safe_characters(self) -> set[str]:
        return set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")

    @property
    def client_key_length(self) -> tuple[int, int]:
        return 1, 200

    @property
    def request_token_length(self) -> tuple[int, int]:
        return 1, 200

    @property
    def access_token_length(self) -> tuple[int, int]:
        return 1, 200

    @property
    def nonce_length(self) -> tuple[int, int]:
        return 1, 200

    @property
    def verifier_length(self) -> tuple[int, int]:
        return 1, 200

    @property
    def enforce_ssl(self) -> bool:
        return False

    @property
    def allowed_signature_methods(self) -> tuple[str, ...]:
        return ("HMAC-SHA1",)

    @property
    def dummy_client(self) -> str:
        return "dummy-client"

    @property
    def dummy_request_token(self) -> str:
        return "dummy-request-token"

    @property
    def dummy_access_token(self) -> str:
        return "dummy-access-token"

    # --- client
    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return hmac.compare_digest(client_key, self.fake.consumer_key)

    def get_client_secret(self, client_key: str, request: Any) -> str:
        if client_key == self.fake.consumer_key:
            return self.fake.consumer_secret
        return "dummy-secret"

    def validate_timestamp_and_nonce(
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: Any,
        request_token: str | None = None,
        access_token: str | None = None,
    ) -> bool:
        key = (client_key, timestamp, nonce, request_token or access_token)
        with self.fake._lock:
            if key in self.fake._nonces and self.fake.reject_replayed_nonces:
                request.fake_error = "nonce already used"
                return False
            self.fake._nonces.add(key)
        return True

    # --- realms: X has none
    def get_default_realms(self, client_key: str, request: Any) -> list[str]:
        return []

    def validate_requested_realms(self, client_key: str, realms: Any, request: Any) -> bool:
        return True

    def get_realms(self, token: str, request: Any) -> list[str]:
        return []

    def validate_realms(self, client_key, token, request, uri=None, realms=None) -> bool:
        return True

    # --- access tokens (resource requests)
    def validate_access_token(self, client_key: str, token: str, request: Any) -> bool:
        with self.fake._lock:
            return token in self.fake._oauth1_tokens

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        with self.fake._lock:
            entry = self.fake._oauth1_tokens.get(token)
        return entry["secret"] if entry else "dummy-secret"

    # --- request tokens (3-legged flow)
    def validate_redirect_uri(self, client_key: str, redirect_uri: str, request: Any) -> bool:
        allowed = self.fake.oauth1_callback_urls
        return redirect_uri == "oob" or allowed is None or redirect_uri in allowed

    def save_request_token(self, token: dict, request: Any) -> None:
        with self.fake._lock:
            self.fake._request_tokens[token["oauth_token"]] = {
                "secret": token["oauth_token_secret"],
                "client_key": request.client_key,
                "callback": request.redirect_uri,
                "verifier": None,
                "user": None,
            }

    def validate_request_token(self, client_key: str, token: str, request: Any) -> bool:
        with self.fake._lock:
            entry = self.fake._request_tokens.get(token)
        return bool(entry) and entry["client_key"] == client_key

    def get_request_token_secret(self, client_key: str, token: str, request: Any) -> str:
        with self.fake._lock:
            entry = self.fake._request_tokens.get(token)
        return entry["secret"] if entry else "dummy-secret"

    def validate_verifier(self, client_key: str, token: str, verifier: str, request: Any) -> bool:
        with self.fake._lock:
            entry = self.fake._request_tokens.get(token)
        return bool(entry and entry["verifier"]) and hmac.compare_digest(
            entry["verifier"], verifier
        )

    def invalidate_request_token(self, client_key: str, request_token: str, request: Any) -> None:
        with self.fake._lock:
            self.fake._request_tokens.pop(request_token, None)

    def save_access_token(self, token: dict, request: Any) -> None:
        # Shape the answer like X's before oauthlib urlencodes this same dict: tokens are
        # "<user id>-<random>", plus user_id and screen_name, and no oauth_authorized_realms.
        with self.fake._lock:
            entry = self.fake._request_tokens.get(request.resource_owner_key) or {}
            user = entry.get("user") or dict(self.fake.oauth1_user)
            token.pop("oauth_authorized_realms", None)
            token["oauth_token"] = f"{user['user_id']}-{token['oauth_token']}"
            token["user_id"] = user["user_id"]
            token["screen_name"] = user["screen_name"]
            self.fake._oauth1_tokens[token["oauth_token"]] = {
                "secret": token["oauth_token_secret"],
                **user,
            }


# --------------------------------------------------------------------------- the server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload),
        status=status,
        headers=headers or {},
        content_type="application/json;charset=utf-8",
    )


def _html_404() -> Response:
    return Response(_HTML_404, status=404, content_type="text/html;charset=utf-8")


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _pkce_ok(verifier: str, challenge: str, method: str) -> bool:
    if method == "plain":
        return hmac.compare_digest(verifier, challenge)
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(expected, challenge)


class FakeX:
    """A fake X (Ads Conversions API + OAuth 1.0a + OAuth 2.0) on a loopback port.

    Plain attributes may be changed at any time by tests:

    - ``pixels``: set of known pixel ids, or None to accept any (unknown -> HTML 404)
    - ``events``: {pixel_id: set of event ids}; pixels not listed accept any base-36 event
    - ``supported_versions`` / ``deprecated_versions``: API versions (None = any);
      unsupported -> HTML 404, deprecated -> ``x-api-warn`` header
    - ``current_api_version``: sent as ``x-current-api-version``
    - ``account_id``: in the 200 answer's ``request.params``
    - ``rate_limit_limit`` / ``rate_limit_remaining`` / ``rate_limit_reset`` /
      ``rate_limit_window``: per-request budget; remaining None = no rate-limit headers
    - ``reject_conversion_if``: callable(conversion) -> None | message | (parameter, message)
    - ``token_delay``: seconds the OAuth 2.0 token endpoint waits before processing
    - ``access_token_lifetime``: seconds (``expires_in``); older access tokens get 401
    - ``oauth2_redirect_uris`` / ``oauth1_callback_urls``: allowed redirect URIs (None = any)
    - ``deny_authorization``: the user presses "Cancel" on the authorize pages
    - ``oauth1_user``: {"user_id", "screen_name"} who approves the 3-legged OAuth 1.0a flow
    - ``reject_replayed_nonces``: OAuth 1.0a nonce reuse -> 401 (as X does)
    """

    def __init__(
        self,
        *,
        consumer_key: str = "ck-test",
        consumer_secret: str = "cs-test",
        access_token: str = "1234567890-at-test",
        access_token_secret: str = "ats-test",
        pixel_token: str = "pt-test",
        client_id: str = "cid-test",
        client_secret: str = "csecret-test",
        oauth2_access_token: str = "o2-access-0",
        oauth2_refresh_token: str = "o2-refresh-0",
        pixels: set[str] | None = None,
        events: dict[str, set[str]] | None = None,
    ) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.oauth1_access_token = access_token  # the app owner's token (developer portal)
        self.oauth1_access_token_secret = access_token_secret
        self.pixel_token = pixel_token
        self.client_id = client_id
        self.client_secret = client_secret

        self.pixels = pixels
        self.events: dict[str, set[str]] = dict(events or {})
        self.supported_versions: set[str] | None = None
        self.deprecated_versions: set[str] = set()
        self.current_api_version = "12"
        self.account_id = "18ce552mlaq"

        self.rate_limit_limit = 100_000
        self.rate_limit_window = 900
        self.rate_limit_remaining: int | None = self.rate_limit_limit
        self.rate_limit_reset = int(time.time()) + self.rate_limit_window

        self.reject_conversion_if: Callable[[dict], Any] | None = None
        self.token_delay = 0.0
        self.access_token_lifetime = 7200
        self.oauth2_redirect_uris: set[str] | None = None
        self.oauth1_callback_urls: set[str] | None = None
        self.deny_authorization = False
        self.oauth1_user = {"user_id": "1234567890", "screen_name": "xtag_test"}
        self.reject_replayed_nonces = True

        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._requests: list[ReceivedRequest] = []
        self._failures: list[_Scripted] = []
        self._hangs: list[_Scripted] = []
        self._nonces: set[tuple] = set()
        self._oauth1_tokens: dict[str, dict[str, str]] = {
            access_token: {"secret": access_token_secret, **self.oauth1_user}
        }
        self._request_tokens: dict[str, dict[str, Any]] = {}
        self._grants: list[_Grant] = []
        self._current_grant: _Grant | None = None
        self._codes: dict[str, dict[str, str]] = {}
        self.refresh_count = 0
        self.set_tokens(oauth2_access_token, oauth2_refresh_token)

        validator = _OAuth1Validator(self)
        self._resource_endpoint = ResourceEndpoint(validator)
        self._request_token_endpoint = RequestTokenEndpoint(validator)
        self._access_token_endpoint = AccessTokenEndpoint(validator)
        self._url_map = Map(
            [
                Rule(
                    "/<version>/measurement/conversions/<pixel_id>",
                    methods=["POST"],
                    endpoint="conversions",
                ),
                Rule("/2/oauth2/token", methods=["POST"], endpoint="oauth2_token"),
                Rule("/i/oauth2/authorize", methods=["GET"], endpoint="oauth2_authorize"),
                Rule("/oauth/request_token", methods=["POST"], endpoint="oauth1_request_token"),
                Rule("/oauth/authorize", methods=["GET"], endpoint="oauth1_authorize"),
                Rule("/oauth/authenticate", methods=["GET"], endpoint="oauth1_authorize"),
                Rule("/oauth/access_token", methods=["POST"], endpoint="oauth1_access_token"),
            ]
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeX:
        """Listen on 127.0.0.1 (random free port) in a background thread; returns self."""
        self._stopping.clear()
        self._server = make_server(
            "127.0.0.1", 0, self, threaded=True, request_handler=_QuietHandler
        )
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="fake-x", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; requests still hanging are released at once."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeX:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def conversions_url(self, pixel_id: str, version: str = "12") -> str:
        return f"{self.base_url}/{version}/measurement/conversions/{pixel_id}"

    # ------------------------------------------------------------------ scripting

    def fail_next(
        self,
        status: int,
        n: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
        endpoint: str = "conversions",
    ) -> None:
        """Answer the next n requests to `endpoint` ("*" = any) with `status`, unprocessed.

        body: dict/list -> JSON, str/bytes -> sent as is (HTML if it starts with "<"),
        None -> an X-style error body for the status (HTML for 404).
        """
        self._check_endpoint(endpoint)
        with self._lock:
            self._failures.append(_Scripted(endpoint, n, status, body, dict(headers or {})))

    def hang_next(self, seconds: float, n: int = 1, endpoint: str = "conversions") -> None:
        """Sleep `seconds` before handling the next n requests to `endpoint` (then answer
        normally: a client that timed out may still have had its conversions accepted)."""
        self._check_endpoint(endpoint)
        with self._lock:
            self._hangs.append(_Scripted(endpoint, n, seconds=seconds))

    def recover(self) -> None:
        """Forget the scripted failures and hangs still to come: X is healthy
        again (a request already hanging still answers when its time is up)."""
        with self._lock:
            self._failures.clear()
            self._hangs.clear()

    @staticmethod
    def _check_endpoint(endpoint: str) -> None:
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS} or '*'")

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of every request received, oldest first."""
        with self._lock:
            return list(self._requests)

    def calls(self, endpoint: str = "conversions") -> list[ReceivedRequest]:
        """Requests received by one endpoint."""
        return [r for r in self.requests if r.endpoint == endpoint]

    def accepted(self, pixel_id: str | None = None) -> list[dict]:
        """Conversions in requests answered 200, oldest first (duplicates included)."""
        return [
            conversion
            for r in self.calls("conversions")
            if r.status == 200 and (pixel_id is None or r.pixel_id == pixel_id)
            for conversion in r.conversions
        ]

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.02
    ) -> bool:
        """Poll predicate() until truthy; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    # ------------------------------------------------------------------ credentials

    @property
    def access_token(self) -> str | None:
        """The current OAuth 2.0 access token (of the grant issued or rotated last)."""
        with self._lock:
            return self._current_grant.access_token if self._current_grant else None

    @property
    def refresh_token(self) -> str | None:
        """The current OAuth 2.0 refresh token (of the grant issued or rotated last)."""
        with self._lock:
            return self._current_grant.refresh_token if self._current_grant else None

    def set_tokens(self, access_token: str, refresh_token: str | None) -> None:
        """Seed the OAuth 2.0 grant (replaces every existing grant)."""
        with self._lock:
            grant = _Grant(self.client_id, OAUTH2_SCOPE, access_token, refresh_token, time.time())
            self._grants = [grant]
            self._current_grant = grant

    def expire_access_token(self, access_token: str | None = None) -> None:
        """Make an access token (default: the current one) expire now; the refresh token
        stays valid."""
        with self._lock:
            token = access_token or self.access_token
            for grant in self._grants:
                if grant.access_token == token:
                    grant.expired = True

    def add_oauth1_token(
        self, token: str, secret: str, user_id: str = "1234567890", screen_name: str = "xtag_test"
    ) -> None:
        """Make another OAuth 1.0a access token valid for the conversions endpoint."""
        with self._lock:
            self._oauth1_tokens[token] = {
                "secret": secret,
                "user_id": user_id,
                "screen_name": screen_name,
            }

    def revoke_oauth1_token(self, token: str) -> None:
        """The user revoked the app: the token gets 401 from now on."""
        with self._lock:
            self._oauth1_tokens.pop(token, None)

    def oauth1_tokens(self) -> dict[str, dict[str, str]]:
        """Valid OAuth 1.0a access tokens -> {"secret", "user_id", "screen_name"}."""
        with self._lock:
            return {k: dict(v) for k, v in self._oauth1_tokens.items()}

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        request = WsgiRequest(environ)
        try:
            endpoint, args = self._url_map.bind_to_environ(environ).match()
        except NotFound:
            endpoint, args = "unknown", {}
        except HTTPException as exc:  # 405
            return exc.get_response(environ)(environ, start_response)
        record = self._record(request, endpoint, args)
        response = self._dispatch(request, record, endpoint, args)
        record.status = response.status_code
        record.response_headers = dict(response.headers)
        record.response_body = response.get_data()
        record.answered_at = time.time()
        return response(environ, start_response)

    def _record(self, request: WsgiRequest, endpoint: str, args: dict) -> ReceivedRequest:
        body = request.get_data(cache=True)
        record = ReceivedRequest(
            seq=0,
            method=request.method,
            path=request.path,
            url=request.url,
            endpoint=endpoint,
            headers=dict(request.headers),
            body=body,
            received_at=time.time(),
            query=dict(request.args),
            version=args.get("version"),
            pixel_id=args.get("pixel_id"),
            auth=self._presented_credential(request),
        )
        if request.mimetype == "application/x-www-form-urlencoded":
            record.form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            record.json = json.loads(body) if body else None
        except ValueError:
            record.json = None
        with self._lock:
            record.seq = len(self._requests) + 1
            self._requests.append(record)
        return record

    def _take_scripted(self, queue: list[_Scripted], endpoint: str) -> _Scripted | None:
        with self._lock:
            for item in queue:
                if item.endpoint in ("*", endpoint):
                    item.remaining -= 1
                    if item.remaining <= 0:
                        queue.remove(item)
                    return item
        return None

    def _dispatch(
        self, request: WsgiRequest, record: ReceivedRequest, endpoint: str, args: dict
    ) -> Response:
        if endpoint == "unknown":
            return _html_404()
        hang = self._take_scripted(self._hangs, endpoint)
        if hang is not None:
            self._stopping.wait(hang.seconds)
        failure = self._take_scripted(self._failures, endpoint)
        if failure is not None:
            record.scripted = True
            return self._scripted_response(failure, endpoint)
        handler = getattr(self, f"_on_{endpoint}")
        return handler(request, record, **args)

    def _scripted_response(self, failure: _Scripted, endpoint: str) -> Response:
        headers = self._api_headers(None) if endpoint == "conversions" else {}
        if failure.status == 429:
            headers["x-rate-limit-remaining"] = "0"
            headers["x-rate-limit-reset"] = str(math.ceil(time.time()) + 1)
        headers.update(failure.headers or {})
        body = failure.body
        if body is None and failure.status == 404:
            response = _html_404()
            response.headers.extend(headers)
            return response
        if body is None:
            code, message = _DEFAULT_ERROR_CODES.get(failure.status, ("ERROR", "Scripted error"))
            body = {"errors": [{"code": code, "message": message}], "request": {"params": {}}}
        if isinstance(body, (dict, list)):
            return _json_response(failure.status, body, headers)
        text = body.decode() if isinstance(body, bytes) else str(body)
        kind = "text/html" if text.lstrip().startswith("<") else "text/plain"
        return Response(text, status=failure.status, headers=headers, content_type=kind)

    # ------------------------------------------------------------------ conversions

    @staticmethod
    def _presented_credential(request: WsgiRequest) -> str | None:
        kinds = FakeX._credential_kinds(request)
        return kinds[0] if len(kinds) == 1 else ("multiple" if kinds else None)

    @staticmethod
    def _credential_kinds(request: WsgiRequest) -> list[str]:
        kinds = []
        authorization = request.headers.get("Authorization", "")
        scheme = authorization.split(" ", 1)[0].lower()
        if scheme == "oauth":
            kinds.append("oauth1")
        elif scheme == "bearer":
            kinds.append("bearer")
        elif authorization:
            kinds.append(scheme or "unknown")
        if "X-Pixel-Token" in request.headers:
            kinds.append("pixel_token")
        return kinds

    def _authenticate(self, request: WsgiRequest) -> str | None:
        """None when authenticated, else why not."""
        kinds = self._credential_kinds(request)
        if not kinds:
            return "No credentials: send OAuth 1.0a, X-Pixel-Token or a Bearer token"
        if len(kinds) > 1:
            return f"More than one credential was sent: {', '.join(kinds)}"
        if kinds[0] == "pixel_token":
            token = request.headers.get("X-Pixel-Token", "")
            if hmac.compare_digest(token.encode(), self.pixel_token.encode()):
                return None
            return "Invalid pixel token"
        if kinds[0] == "bearer":
            return self._check_bearer(request.headers["Authorization"].split(" ", 1)[-1].strip())
        if kinds[0] == "oauth1":
            return self._check_oauth1(request)
        return f"Unsupported authorization scheme {kinds[0]!r}"

    def _check_bearer(self, token: str) -> str | None:
        with self._lock:
            for grant in self._grants:
                if hmac.compare_digest(grant.access_token.encode(), token.encode()):
                    age = time.time() - grant.issued_at
                    if grant.expired or age >= self.access_token_lifetime:
                        return "The access token has expired"
                    return None
        return "Invalid or expired access token"

    def _check_oauth1(self, request: WsgiRequest) -> str | None:
        valid, checked = self._resource_endpoint.validate_protected_resource_request(
            request.url,
            http_method=request.method,
            body=request.get_data(as_text=True),
            headers=dict(request.headers),
        )
        if valid:
            return None
        reason = "malformed OAuth header"
        if checked is not None:
            failed = [k for k, ok in getattr(checked, "validator_log", {}).items() if not ok]
            reason = getattr(checked, "fake_error", None) or (
                f"invalid {', '.join(failed)}" if failed else "missing or invalid OAuth parameters"
            )
        return f"Could not authenticate you (OAuth 1.0a: {reason})"

    def _api_headers(self, version: str | None) -> dict[str, str]:
        headers = {"x-current-api-version": self.current_api_version}
        if version is not None and version in self.deprecated_versions:
            headers["x-api-warn"] = (
                f"Version {version} is deprecated; use {self.current_api_version}"
            )
        with self._lock:
            if self.rate_limit_remaining is not None:
                headers["x-rate-limit-limit"] = str(self.rate_limit_limit)
                headers["x-rate-limit-remaining"] = str(self.rate_limit_remaining)
                headers["x-rate-limit-reset"] = str(int(self.rate_limit_reset))
        return headers

    def _spend_rate_limit(self) -> bool:
        """Take one request from the budget; False when it is exhausted (-> 429)."""
        with self._lock:
            if self.rate_limit_remaining is None:
                return True
            now = time.time()
            if now >= self.rate_limit_reset:
                self.rate_limit_remaining = self.rate_limit_limit
                self.rate_limit_reset = int(now) + self.rate_limit_window
            if self.rate_limit_remaining <= 0:
                self.rate_limit_remaining = 0
                return False
            self.rate_limit_remaining -= 1
            return True

    def _invalid(self, request: WsgiRequest, pixel_id: str) -> list[dict[str, str]]:
        if request.mimetype != "application/json":
            return [
                {
                    "code": "INVALID_PARAMETER",
                    "message": "Content-Type must be application/json",
                    "parameter": "conversions",
                }
            ]
        try:
            payload = json.loads(
                request.get_data(), parse_float=Decimal, parse_constant=_reject_constant
            )
        except ValueError:
            payload = None
        errors = validate_batch(payload, pixel_id, self.events.get(pixel_id))
        if errors or self.reject_conversion_if is None:
            return errors
        for i, conversion in enumerate(json.loads(request.get_data())["conversions"]):
            verdict = self.reject_conversion_if(conversion)
            if verdict:
                parameter, message = (
                    verdict if isinstance(verdict, tuple) else ("conversions", verdict)
                )
                errors.append(
                    {
                        "code": "INVALID_PARAMETER",
                        "message": f"conversions[{i}]: {message}",
                        "parameter": parameter,
                    }
                )
        return errors

    def _on_conversions(
        self, request: WsgiRequest, record: ReceivedRequest, version: str, pixel_id: str
    ) -> Response:
        reason = self._authenticate(request)
        record.authenticated = reason is None
        record.auth_error = reason
        if reason is not None:
            return _json_response(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": reason}]},
                self._api_headers(version),
            )
        if (self.pixels is not None and pixel_id not in self.pixels) or (
            self.supported_versions is not None and version not in self.supported_versions
        ):
            return _html_404()
        if not self._spend_rate_limit():
            return _json_response(
                429,
                {"errors": [{"code": "TOO_MANY_REQUESTS", "message": "Rate limit exceeded"}]},
                self._api_headers(version),
            )
        errors = self._invalid(request, pixel_id)
        if errors:
            return _json_response(
                400, {"errors": errors, "request": {"params": {}}}, self._api_headers(version)
            )
        payload = {
            "request": {"params": {"account_id": self.account_id}},
            "data": {
                "conversions_processed": len(record.conversions),
                "debug_id": str(uuid.uuid4()),
            },
        }
        return _json_response(200, payload, self._api_headers(version))

    # ------------------------------------------------------------------ OAuth 2.0

    @staticmethod
    def _oauth2_error(status: int, error: str, description: str) -> Response:
        return _json_response(
            status,
            {"error": error, "error_description": description},
            {"Cache-Control": "no-store"},
        )

    def _on_oauth2_authorize(self, request: WsgiRequest, record: ReceivedRequest) -> Response:
        args = request.args
        redirect_uri = args.get("redirect_uri", "")
        if args.get("client_id") != self.client_id or not redirect_uri.startswith("http"):
            return Response(
                "<html><body>Something went wrong</body></html>", 400, mimetype="text/html"
            )
        if self.oauth2_redirect_uris is not None and redirect_uri not in self.oauth2_redirect_uris:
            return Response(
                "<html><body>Something went wrong</body></html>", 400, mimetype="text/html"
            )
        state = args.get("state", "")
        method = args.get("code_challenge_method", "plain")
        if (
            args.get("response_type") != "code"
            or not state
            or not args.get("code_challenge")
            or method not in ("S256", "plain")
        ):
            back = {"error": "invalid_request", "state": state}
            return Response(status=302, headers={"Location": _with_query(redirect_uri, back)})
        if self.deny_authorization:
            back = {"error": "access_denied", "state": state}
            return Response(status=302, headers={"Location": _with_query(redirect_uri, back)})
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = {
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": args.get("scope", ""),
                "challenge": args["code_challenge"],
                "method": method,
            }
        location = _with_query(redirect_uri, {"state": state, "code": code})
        return Response(status=302, headers={"Location": location})

    def _oauth2_client(self, request: WsgiRequest) -> str | None:
        """The authenticated client_id (HTTP Basic, or client_id in the body), or None."""
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            ok = hmac.compare_digest(auth.username or "", self.client_id) and hmac.compare_digest(
                auth.password or "", self.client_secret
            )
            return self.client_id if ok else None
        client_id = request.form.get("client_id")
        if client_id != self.client_id:
            return None
        secret = request.form.get("client_secret")
        if secret is not None and not hmac.compare_digest(secret, self.client_secret):
            return None
        return client_id

    def _issue(self, client_id: str, scope: str) -> _Grant:
        refresh = secrets.token_urlsafe(32) if "offline.access" in scope.split() else None
        grant = _Grant(client_id, scope, secrets.token_urlsafe(32), refresh, time.time())
        self._grants.append(grant)
        self._current_grant = grant
        return grant

    def _token_response(self, grant: _Grant) -> Response:
        payload: dict[str, Any] = {
            "token_type": "bearer",
            "expires_in": self.access_token_lifetime,
            "access_token": grant.access_token,
            "scope": grant.scope,
        }
        if grant.refresh_token:
            payload["refresh_token"] = grant.refresh_token
        return _json_response(200, payload, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _on_oauth2_token(self, request: WsgiRequest, record: ReceivedRequest) -> Response:
        if self.token_delay:
            self._stopping.wait(self.token_delay)
        if request.mimetype != "application/x-www-form-urlencoded":
            return self._oauth2_error(400, "invalid_request", "Expected a form-encoded body.")
        client_id = self._oauth2_client(request)
        record.auth = "oauth2_client"
        record.authenticated = client_id is not None
        if client_id is None:
            return self._oauth2_error(
                401, "unauthorized_client", "Missing valid authorization header"
            )
        grant_type = request.form.get("grant_type")
        if grant_type == "refresh_token":
            return self._refresh(client_id, request.form.get("refresh_token", ""))
        if grant_type == "authorization_code":
            return self._exchange_code(client_id, request.form)
        return self._oauth2_error(400, "unsupported_grant_type", f"grant_type {grant_type!r}")

    def _refresh(self, client_id: str, refresh_token: str) -> Response:
        with self._lock:
            for grant in self._grants:
                if (
                    refresh_token
                    and grant.refresh_token
                    and hmac.compare_digest(grant.refresh_token, refresh_token)
                    and grant.client_id == client_id
                ):
                    # Rotation: the old refresh token and the old access token die now.
                    grant.access_token = secrets.token_urlsafe(32)
                    grant.refresh_token = secrets.token_urlsafe(32)
                    grant.issued_at = time.time()
                    grant.expired = False
                    self._current_grant = grant
                    self.refresh_count += 1
                    return self._token_response(grant)
        return self._oauth2_error(400, "invalid_request", "Value passed for the token was invalid.")

    def _exchange_code(self, client_id: str, form: Any) -> Response:
        with self._lock:
            entry = self._codes.pop(form.get("code", ""), None)  # single use
            valid = (
                entry is not None
                and entry["client_id"] == client_id
                and entry["redirect_uri"] == form.get("redirect_uri")
                and _pkce_ok(form.get("code_verifier", ""), entry["challenge"], entry["method"])
            )
            if not valid:
                return self._oauth2_error(
                    400, "invalid_request", "Value passed for the authorization code was invalid."
                )
            return self._token_response(self._issue(client_id, entry["scope"]))

    # ------------------------------------------------------------------ OAuth 1.0a 3-legged

    @staticmethod
    def _oauth1_answer(headers: dict, body: str | None, status: int) -> Response:
        if status == 401 or body is None:
            payload = {"errors": [{"code": 32, "message": "Could not authenticate you."}]}
            return _json_response(status, payload)
        return Response(
            body,
            status=status,
            headers=headers,
            content_type=headers.get("Content-Type", "application/x-www-form-urlencoded"),
        )

    def _on_oauth1_request_token(self, request: WsgiRequest, record: ReceivedRequest) -> Response:
        headers, body, status = self._request_token_endpoint.create_request_token_response(
            request.url,
            http_method=request.method,
            body=request.get_data(as_text=True),
            headers=dict(request.headers),
        )
        record.authenticated = status == 200
        return self._oauth1_answer(headers, body, status)

    def _on_oauth1_authorize(self, request: WsgiRequest, record: ReceivedRequest) -> Response:
        token = request.args.get("oauth_token", "")
        with self._lock:
            entry = self._request_tokens.get(token)
            if entry is None:
                return Response(
                    "<html><body>This page is no longer valid.</body></html>",
                    403,
                    mimetype="text/html",
                )
            callback = entry["callback"]
            if self.deny_authorization:
                self._request_tokens.pop(token, None)
                if callback == "oob":
                    return Response("<html><body>Denied</body></html>", 200, mimetype="text/html")
                return Response(
                    status=302, headers={"Location": _with_query(callback, {"denied": token})}
                )
            verifier = secrets.token_urlsafe(24)
            entry["verifier"] = verifier
            entry["user"] = dict(self.oauth1_user)
        if callback == "oob":
            page = f"<html><body>PIN: <code id='oauth_pin'>{verifier}</code></body></html>"
            return Response(page, 200, mimetype="text/html")
        location = _with_query(callback, {"oauth_token": token, "oauth_verifier": verifier})
        return Response(status=302, headers={"Location": location})

    def _on_oauth1_access_token(self, request: WsgiRequest, record: ReceivedRequest) -> Response:
        headers, body, status = self._access_token_endpoint.create_access_token_response(
            request.url,
            http_method=request.method,
            body=request.get_data(as_text=True),
            headers=dict(request.headers),
        )
        record.authenticated = status == 200
        return self._oauth1_answer(headers, body, status)


@pytest.fixture
def fake_x():
    """A started FakeX, stopped after the test."""
    server = FakeX().start()
    yield server
    server.stop()
