"""FakeX itself: a threaded WSGI server on loopback that routes, records and inspects requests
(each endpoint's behaviour comes from its concern's mixin), and the ``fake_x`` fixture."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import pytest
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response

from .conversions import ConversionsMixin
from .limits import LimitsMixin
from .oauth1 import OAuth1Mixin
from .oauth2 import OAuth2Mixin
from .records import ReceivedRequest
from .responses import html_404


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class FakeX(ConversionsMixin, LimitsMixin, OAuth1Mixin, OAuth2Mixin):
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
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._requests: list[ReceivedRequest] = []
        self.deny_authorization = False  # both the OAuth 1.0a and the OAuth 2.0 authorize page
        self._init_conversions(pixel_token, pixels, events)
        self._init_limits()
        self._init_oauth1(consumer_key, consumer_secret, access_token, access_token_secret)
        self._init_oauth2(client_id, client_secret, oauth2_access_token, oauth2_refresh_token)
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

    def _dispatch(
        self, request: WsgiRequest, record: ReceivedRequest, endpoint: str, args: dict
    ) -> Response:
        if endpoint == "unknown":
            return html_404()
        scripted = self._run_script(record, endpoint)
        if scripted is not None:
            return scripted
        handler = getattr(self, f"_on_{endpoint}")
        return handler(request, record, **args)


@pytest.fixture
def fake_x():
    """A started FakeX, stopped after the test."""
    server = FakeX().start()
    yield server
    server.stop()
