"""The conversions endpoint: which credential was sent and whether it is good, API versions,
X's validation of the batch and its answers (200, 400, 401, 404, 429)."""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response

from .records import ReceivedRequest
from .responses import html_404, json_response
from .validation import validate_batch


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class ConversionsMixin:
    """FakeX's ``POST /{version}/measurement/conversions/{pixel_id}`` (state set by
    _init_conversions)."""

    def _init_conversions(
        self, pixel_token: str, pixels: set[str] | None, events: dict[str, set[str]] | None
    ) -> None:
        self.pixel_token = pixel_token
        self.pixels = pixels
        self.events: dict[str, set[str]] = dict(events or {})
        self.supported_versions: set[str] | None = None
        self.deprecated_versions: set[str] = set()
        self.current_api_version = "12"
        self.account_id = "18ce552mlaq"
        self.reject_conversion_if: Callable[[dict], Any] | None = None

    def conversions_url(self, pixel_id: str, version: str = "12") -> str:
        return f"{self.base_url}/{version}/measurement/conversions/{pixel_id}"

    @staticmethod
    def _presented_credential(request: WsgiRequest) -> str | None:
        kinds = ConversionsMixin._credential_kinds(request)
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

    def _api_headers(self, version: str | None) -> dict[str, str]:
        headers = {"x-current-api-version": self.current_api_version}
        if version is not None and version in self.deprecated_versions:
            headers["x-api-warn"] = (
                f"Version {version} is deprecated; use {self.current_api_version}"
            )
        headers.update(self._rate_limit_headers())
        return headers

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
            return json_response(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": reason}]},
                self._api_headers(version),
            )
        if (self.pixels is not None and pixel_id not in self.pixels) or (
            self.supported_versions is not None and version not in self.supported_versions
        ):
            return html_404()
        if not self._spend_rate_limit():
            return json_response(
                429,
                {"errors": [{"code": "TOO_MANY_REQUESTS", "message": "Rate limit exceeded"}]},
                self._api_headers(version),
            )
        errors = self._invalid(request, pixel_id)
        if errors:
            return json_response(
                400, {"errors": errors, "request": {"params": {}}}, self._api_headers(version)
            )
        payload = {
            "request": {"params": {"account_id": self.account_id}},
            "data": {
                "conversions_processed": len(record.conversions),
                "debug_id": str(uuid.uuid4()),
            },
        }
        return json_response(200, payload, self._api_headers(version))
