"""OAuth 1.0a as X does it: oauthlib's request validator backed by the fake's state, signed
requests to the conversions endpoint, and the 3-legged flow (request token, authorize,
access token)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oauthlib.oauth1 import (
    AccessTokenEndpoint,
    RequestTokenEndpoint,
    RequestValidator,
    ResourceEndpoint,
)
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response

from .records import ReceivedRequest
from .responses import json_response, with_query

if TYPE_CHECKING:
    from .server import FakeX


def _oauthlib_request(request: WsgiRequest) -> dict[str, Any]:
    """The request as oauthlib's endpoints take it (keyword arguments)."""
    return {
        "uri": request.url,
        "http_method": request.method,
        "body": request.get_data(as_text=True),
        "headers": dict(request.headers),
    }


class OAuth1Validator(RequestValidator):
    """oauthlib's server-side policy, backed by the fake's state."""

    # Real X keys/tokens don't fit oauthlib's defaults (20-30 alphanumerics): access tokens
    # look like "<user id>-<random>" and are ~50 characters. (Plain class attributes
    # override oauthlib's properties.)
    safe_characters = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")
    client_key_length = request_token_length = access_token_length = (1, 200)
    nonce_length = verifier_length = (1, 200)
    enforce_ssl = False
    allowed_signature_methods = ("HMAC-SHA1",)
    dummy_client = "dummy-client"
    dummy_request_token = "dummy-request-token"
    dummy_access_token = "dummy-access-token"

    def __init__(self, fake: FakeX) -> None:
        super().__init__()
        self.fake = fake

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


class OAuth1Mixin:
    """FakeX's OAuth 1.0a app, tokens and endpoints (state set by _init_oauth1)."""

    def _init_oauth1(
        self, consumer_key: str, consumer_secret: str, access_token: str, access_token_secret: str
    ) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.oauth1_access_token = access_token  # the app owner's token (developer portal)
        self.oauth1_access_token_secret = access_token_secret
        self.oauth1_callback_urls: set[str] | None = None
        self.oauth1_user = {"user_id": "1234567890", "screen_name": "xtag_test"}
        self.reject_replayed_nonces = True
        self._nonces: set[tuple] = set()
        self._oauth1_tokens: dict[str, dict[str, str]] = {
            access_token: {"secret": access_token_secret, **self.oauth1_user}
        }
        self._request_tokens: dict[str, dict[str, Any]] = {}
        validator = OAuth1Validator(self)
        self._resource_endpoint = ResourceEndpoint(validator)
        self._request_token_endpoint = RequestTokenEndpoint(validator)
        self._access_token_endpoint = AccessTokenEndpoint(validator)

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

    def _check_oauth1(self, request: WsgiRequest) -> str | None:
        valid, checked = self._resource_endpoint.validate_protected_resource_request(
            **_oauthlib_request(request)
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

    def _oauth1_token_step(
        self, create: Callable, request: WsgiRequest, record: ReceivedRequest
    ) -> Response:
        """A request token or access token step: oauthlib's answer, or X's 401 body."""
        headers, body, status = create(**_oauthlib_request(request))
        record.authenticated = status == 200
        if status == 401 or body is None:
            payload = {"errors": [{"code": 32, "message": "Could not authenticate you."}]}
            return json_response(status, payload)
        return Response(
            body,
            status=status,
            headers=headers,
            content_type=headers.get("Content-Type", "application/x-www-form-urlencoded"),
        )

    def _on_oauth1_request_token(self, request: WsgiRequest, record: ReceivedRequest) -> Response:
        create = self._request_token_endpoint.create_request_token_response
        return self._oauth1_token_step(create, request, record)

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
                    status=302, headers={"Location": with_query(callback, {"denied": token})}
                )
            verifier = secrets.token_urlsafe(24)
            entry["verifier"] = verifier
            entry["user"] = dict(self.oauth1_user)
        if callback == "oob":
            page = f"<html><body>PIN: <code id='oauth_pin'>{verifier}</code></body></html>"
            return Response(page, 200, mimetype="text/html")
        location = with_query(callback, {"oauth_token": token, "oauth_verifier": verifier})
        return Response(status=302, headers={"Location": location})

    def _on_oauth1_access_token(self, request: WsgiRequest, record: ReceivedRequest) -> Response:
        create = self._access_token_endpoint.create_access_token_response
        return self._oauth1_token_step(create, request, record)
