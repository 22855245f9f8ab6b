"""OAuth 2.0 as X does it: authorize, the token endpoint (PKCE, refresh token rotation) and
the bearer tokens the conversions endpoint accepts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response

from .records import ReceivedRequest
from .responses import json_response, with_query

OAUTH2_SCOPE = "ads_management offline.access"


@dataclass
class Grant:
    """An OAuth 2.0 grant: one access token + refresh token pair that rotates."""

    client_id: str
    scope: str
    access_token: str
    refresh_token: str | None
    issued_at: float
    expired: bool = False


def _pkce_ok(verifier: str, challenge: str, method: str) -> bool:
    if method == "plain":
        return hmac.compare_digest(verifier, challenge)
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(expected, challenge)


class OAuth2Mixin:
    """FakeX's OAuth 2.0 app, grants and endpoints (state set by _init_oauth2)."""

    def _init_oauth2(
        self, client_id: str, client_secret: str, access_token: str, refresh_token: str
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_delay = 0.0
        self.access_token_lifetime = 7200
        self.oauth2_redirect_uris: set[str] | None = None
        self._grants: list[Grant] = []
        self._current_grant: Grant | None = None
        self._codes: dict[str, dict[str, str]] = {}
        self.refresh_count = 0
        self.set_tokens(access_token, refresh_token)

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
            grant = Grant(self.client_id, OAUTH2_SCOPE, access_token, refresh_token, time.time())
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

    def _check_bearer(self, token: str) -> str | None:
        with self._lock:
            for grant in self._grants:
                if hmac.compare_digest(grant.access_token.encode(), token.encode()):
                    age = time.time() - grant.issued_at
                    if grant.expired or age >= self.access_token_lifetime:
                        return "The access token has expired"
                    return None
        return "Invalid or expired access token"

    @staticmethod
    def _oauth2_error(status: int, error: str, description: str) -> Response:
        return json_response(
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
            return Response(status=302, headers={"Location": with_query(redirect_uri, back)})
        if self.deny_authorization:
            back = {"error": "access_denied", "state": state}
            return Response(status=302, headers={"Location": with_query(redirect_uri, back)})
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = {
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": args.get("scope", ""),
                "challenge": args["code_challenge"],
                "method": method,
            }
        location = with_query(redirect_uri, {"state": state, "code": code})
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

    def _issue(self, client_id: str, scope: str) -> Grant:
        refresh = secrets.token_urlsafe(32) if "offline.access" in scope.split() else None
        grant = Grant(client_id, scope, secrets.token_urlsafe(32), refresh, time.time())
        self._grants.append(grant)
        self._current_grant = grant
        return grant

    def _token_response(self, grant: Grant) -> Response:
        payload: dict[str, Any] = {
            "token_type": "bearer",
            "expires_in": self.access_token_lifetime,
            "access_token": grant.access_token,
            "scope": grant.scope,
        }
        if grant.refresh_token:
            payload["refresh_token"] = grant.refresh_token
        return json_response(200, payload, {"Cache-Control": "no-store", "Pragma": "no-cache"})

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
