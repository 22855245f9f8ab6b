"""Logs as one JSON object per line (or plain text for humans), each carrying
the ids that tie it to a request, site, pixel, delivery or job."""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime

import orjson
from rq import get_current_job

from xtag.core.times import iso_ms

FORMATS = ("json", "text")
# Ids a log record may carry, from `extra=` or from the context below.
FIELDS = ("request_id", "site", "pixel", "delivery", "job")

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("xtag_log", default=None)


def bind(**fields) -> None:
    """Add ids to every record logged from here on in this request or job."""
    _context.set({**(_context.get() or {}), **fields})


def clear() -> None:
    _context.set(None)


def _ids(record: logging.LogRecord) -> dict:
    ids = dict(_context.get() or {})
    for name in FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            ids[name] = value
    if "job" not in ids and "request_id" not in ids and record.name.startswith("xtag"):
        job = get_current_job()  # None outside an RQ job (and a request is none)
        if job is not None:
            ids["job"] = job.id
    return ids


_second: tuple[int, str] = (-1, "")  # the latest whole second a record had, formatted


def _stamp(created: float) -> str:
    """A record's time as iso_ms writes it, its seconds formatted once a
    second (a line per request: this is on every request's path)."""
    global _second
    whole = int(created)
    micro = round((created - whole) * 1e6)  # rounded as datetime.fromtimestamp does
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    if whole != _second[0]:
        _second = (whole, iso_ms(datetime.fromtimestamp(whole, UTC))[:-5])
    return f"{_second[1]}.{micro // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": _stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_ids(record),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = {**_ids(record), **getattr(record, "fields", {})}
        text += "".join(f" {k}={v}" for k, v in extra.items())
        if record.exc_info:  # the traceback keeps its lines
            head, _, trace = text.partition("\nTraceback")
            return _one_line(head) + ("\nTraceback" + trace if trace else "")
        return _one_line(text)


def _one_line(text: str) -> str:
    """Control characters escaped: a request path cannot forge a log line."""
    return text.translate(CONTROL)


CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure(fmt: str, level: int = logging.INFO) -> None:
    """One handler on the root logger, to stderr; calling it again replaces it."""
    reset()
    root = logging.getLogger()
    handler = _Stderr()
    handler.xtag = True
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def reset() -> None:
    """Take xtag's handler off the root logger again."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "xtag", False)]:
        root.removeHandler(handler)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
http_log = logging.getLogger("xtag.http")


class RequestLog:
    """WSGI middleware: one log line per request with its id, status and time;
    the id comes from X-Request-ID when a proxy set a sane one, and is echoed.
    The query string is never logged (a site may put an email in it)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        given = environ.get("HTTP_X_REQUEST_ID")
        request_id = given if given and _REQUEST_ID.match(given) else os.urandom(16).hex()
        token = _context.set({"request_id": request_id})
        started = time.perf_counter()
        status = []

        def start(line, headers, exc_info=None):
            status.append(line)
            headers.append(("X-Request-ID", request_id))
            return start_response(line, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            code = int(status[0].split(" ", 1)[0]) if status else 500
            ms = round((time.perf_counter() - started) * 1000, 2)
            method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            if http_log.isEnabledFor(logging.INFO):
                fields = {"method": method, "path": path, "status": code, "ms": ms}
                # the record made directly: no search of the stack for the caller
                record = http_log.makeRecord(
                    http_log.name, logging.INFO, __file__, 0, "%s %s %s %.1f ms",
                    (method, path, code, ms), None, extra={"fields": fields},
                )  # fmt: skip
                http_log.handle(record)
            _context.reset(token)
