"""Real Chromium for the browser tests, and a customer's shop page with the
beacon's snippet installed, served from another origin."""

from __future__ import annotations

import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BEACON = Path(__file__).resolve().parents[2] / "static" / "xtag.js"
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
        self.pages: dict[str, str] = {}
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.split("?")[0].lstrip("/")
                if name not in shop.pages:
                    self.send_error(404)
                    return
                body = shop.html(name, shop.pages[name]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
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
