"""Rate limits and scripted trouble: fail_next, hang_next, recover, the x-rate-limit-* budget."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Response

from .records import ENDPOINTS, ReceivedRequest
from .responses import html_404, json_response

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


@dataclass
class Scripted:
    """A scripted answer (fail_next) or delay (hang_next) for the next `remaining` requests."""

    endpoint: str
    remaining: int
    status: int = 0
    body: Any = None
    headers: dict[str, str] | None = None
    seconds: float = 0.0


class LimitsMixin:
    """FakeX's rate-limit budget and scripted failures and hangs (state set by _init_limits)."""

    def _init_limits(self) -> None:
        self.rate_limit_limit = 100_000
        self.rate_limit_window = 900
        self.rate_limit_remaining: int | None = self.rate_limit_limit
        self.rate_limit_reset = int(time.time()) + self.rate_limit_window
        self._failures: list[Scripted] = []
        self._hangs: list[Scripted] = []

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
            self._failures.append(Scripted(endpoint, n, status, body, dict(headers or {})))

    def hang_next(self, seconds: float, n: int = 1, endpoint: str = "conversions") -> None:
        """Sleep `seconds` before handling the next n requests to `endpoint` (then answer
        normally: a client that timed out may still have had its conversions accepted)."""
        self._check_endpoint(endpoint)
        with self._lock:
            self._hangs.append(Scripted(endpoint, n, seconds=seconds))

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

    def _take_scripted(self, queue: list[Scripted], endpoint: str) -> Scripted | None:
        with self._lock:
            for item in queue:
                if item.endpoint in ("*", endpoint):
                    item.remaining -= 1
                    if item.remaining <= 0:
                        queue.remove(item)
                    return item
        return None

    def _run_script(self, record: ReceivedRequest, endpoint: str) -> Response | None:
        """Wait out a scripted hang, then give the scripted failure if any (None: answer)."""
        hang = self._take_scripted(self._hangs, endpoint)
        if hang is not None:
            self._stopping.wait(hang.seconds)
        failure = self._take_scripted(self._failures, endpoint)
        if failure is not None:
            record.scripted = True
            return self._scripted_response(failure, endpoint)
        return None

    def _scripted_response(self, failure: Scripted, endpoint: str) -> Response:
        headers = self._api_headers(None) if endpoint == "conversions" else {}
        if failure.status == 429:
            headers["x-rate-limit-remaining"] = "0"
            headers["x-rate-limit-reset"] = str(math.ceil(time.time()) + 1)
        headers.update(failure.headers or {})
        body = failure.body
        if body is None and failure.status == 404:
            response = html_404()
            response.headers.extend(headers)
            return response
        if body is None:
            code, message = _DEFAULT_ERROR_CODES.get(failure.status, ("ERROR", "Scripted error"))
            body = {"errors": [{"code": code, "message": message}], "request": {"params": {}}}
        if isinstance(body, (dict, list)):
            return json_response(failure.status, body, headers)
        text = body.decode() if isinstance(body, bytes) else str(body)
        kind = "text/html" if text.lstrip().startswith("<") else "text/plain"
        return Response(text, status=failure.status, headers=headers, content_type=kind)

    def _rate_limit_headers(self) -> dict[str, str]:
        """The x-rate-limit-* headers of the budget; none when remaining is None."""
        with self._lock:
            if self.rate_limit_remaining is None:
                return {}
            return {
                "x-rate-limit-limit": str(self.rate_limit_limit),
                "x-rate-limit-remaining": str(self.rate_limit_remaining),
                "x-rate-limit-reset": str(int(self.rate_limit_reset)),
            }

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
