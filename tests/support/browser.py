"""Real Chromium for the browser tests, and a customer's shop: pages with the
beacon's snippet installed, or with another vendored SDK (tests/support/sdks),
served from another origin than the collector."""

from __future__ import annotations

import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from xtag.extensions import db
from xtag.models import ReceivedEvent

BEACON = Path(__file__).resolve().parents[2] / "static" / "xtag.js"
SDKS = Path(__file__).resolve().parent / "sdks"  # vendored by scripts/vendor.sh
CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def documented_snippet() -> str:
    """The install snippet exactly as xtag.js documents it (the README copies it)."""
    found = re.search(r"<script>\n(!function.*)\n</script>", BEACON.read_text())
    assert found, "xtag.js no longer documents its snippet in the top comment"
    return found.group(1)


class Shop:
    """A second tiny web server: the customer's site, with the snippet installed."""

    def __init__(self, collector: str, write_key: str):
        self.collector = collector
        self.write_key = write_key
        self.pages: dict[str, str] = {}  # name -> script run after xtag.js's snippet
        self.raw: dict[str, str] = {}  # name -> a whole page (another SDK's)
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.split("?")[0].lstrip("/")
                if name.startswith("sdks/") and (SDKS / name[5:]).is_file():
                    body, kind = (SDKS / name[5:]).read_bytes(), "text/javascript"
                elif name in shop.raw:
                    body, kind = shop.raw[name].encode(), "text/html; charset=utf-8"
                elif name in shop.pages:
                    body = shop.html(name, shop.pages[name]).encode()
                    kind = "text/html; charset=utf-8"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://localhost:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def html(self, name: str, script: str) -> str:
        snippet = documented_snippet()
        snippet = snippet.replace("https://collect.example.com", self.collector)
        snippet = snippet.replace("WRITE_KEY", self.write_key)
        return (
            f'<!doctype html><html><head><title>{name}</title><link rel="icon" href="data:,">'
            f"<script>\n{snippet}\n{script}\n</script></head>"
            '<body><a id="next" href="page2.html">Next</a></body></html>'
        )

    def url(self, path: str) -> str:
        return f"{self.origin}/{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Tab:
    """A fresh browser profile with one page, noting console errors and collector calls."""

    def __init__(self, browser, collector: str, init_script: str | None = None):
        self.context = browser.new_context()
        if init_script:
            self.context.add_init_script(init_script)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.collector = collector
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", self._request)

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _request(self, request) -> None:
        if request.url.startswith(self.collector + "/v1/"):
            self.requests.append((request.resource_type, request.url[len(self.collector) :]))

    def collector_calls(self) -> list[tuple[str, str]]:
        """(resource type, path) of each call to the collector so far."""
        self.page.evaluate("0")  # a round trip, so pending request events are in
        return self.requests

    def cookies(self) -> dict[tuple[str, str], dict]:
        return {(c["domain"], c["name"]): c for c in self.context.cookies()}


def received(work, done, timeout: float = 20) -> list[ReceivedEvent]:
    """Run the worker until `done(rows)` holds for the recorded events."""
    deadline = time.monotonic() + timeout
    while True:
        work()
        db.session.remove()
        rows = list(db.session.scalars(select(ReceivedEvent).order_by(ReceivedEvent.id)))
        if done(rows):
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; received {[(r.type, r.event_name) for r in rows]}")
        time.sleep(0.1)
