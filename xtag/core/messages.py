"""The collector's message rules: what a request body must be for its
messages to be accepted (size, encoding, JSON, types, ids, shapes, times,
storable text), and the facts of the request. xtag.core.events makes the
queued event of an accepted message.

Pure functions over plain data, so every rule of the collector contract can
be tested directly and reused by the preview and the bench.
"""

from __future__ import annotations

import ipaddress
import json
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from xtag.core import fastjson
from xtag.core.times import parse

MESSAGE_LIMIT = 32 * 1024
DEPTH_MAX = 64  # levels of nesting in a message
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL and UTF-8 refuse them
BATCH_LIMIT = 500 * 1024
BATCH_MAX_MESSAGES = 2500
TYPES = ("track", "page", "identify", "screen", "group", "alias")
NAME_MAX = 200
ID_MAX = 200


class Rejected(ValueError):
    """A request (or one message of a batch) the collector refuses, and why;
    `code` is the machine-readable reason SDKs read."""

    code = "invalid"


class TooLarge(Rejected):
    """Over MESSAGE_LIMIT per message or BATCH_LIMIT per request."""

    code = "too_large"


class UnsupportedEncoding(Rejected):
    """A Content-Encoding other than gzip."""

    code = "unsupported_encoding"


@dataclass(frozen=True)
class SiteRules:
    id: int
    allowed_origins: tuple[str, ...]
    default_phone_region: str | None
    require_consent: bool
    rate_limit: int | None = None  # events per second; None: the server's default


@dataclass(frozen=True)
class RequestFacts:
    """What the HTTP request itself tells about the sender. `browser`: it came
    from a web page (an Origin or Referer, or a browser's user agent), so its
    address and user agent are the visitor's."""

    ip: str | None
    user_agent: str | None
    cookie_twclid: str | None
    gpc: bool
    received_at: datetime
    browser: bool = True


class Decoded(NamedTuple):
    """A request body's JSON object and its size in bytes, and what its bytes
    already rule out: `storable`, no string in it can hold NUL or a lone
    surrogate (no \\u escape, no byte that decodes to one); `shallow`, nothing
    in it can be nested deeper than DEPTH_MAX (fewer brackets than that)."""

    body: dict
    size: int
    storable: bool = False
    shallow: bool = False


def decode_body(raw: bytes, content_encoding: str | None) -> Decoded:
    """The JSON object in the body, gunzipped if need be, within BATCH_LIMIT."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, BATCH_LIMIT + 1)
        except zlib.error:
            raise Rejected("body is not valid gzip") from None
        if len(raw) > BATCH_LIMIT or inflater.unconsumed_tail:
            raise TooLarge(f"body is over {BATCH_LIMIT // 1024} KB once decompressed")
    elif encoding not in ("", "identity"):
        raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported; use gzip")
    if not raw.strip():
        raise Rejected("body is empty; send a JSON object")
    try:
        body = fastjson.loads(raw, constants=False)
    except (ValueError, RecursionError):
        raise Rejected("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Rejected("body must be a JSON object")
    # NUL and lone surrogates come only from \u escapes, or from bytes the
    # standard library decodes with surrogatepass (0xED..., or UTF-16/32 with NULs)
    storable = b"\\u" not in raw and b"\xed" not in raw and b"\x00" not in raw
    shallow = raw.count(b"{") + raw.count(b"[") <= DEPTH_MAX
    return Decoded(body, len(raw), storable, shallow)


def messages_of(body: dict, route: str) -> list[tuple[str, object]]:
    """(path, message) pairs: one for a single-message route, many for
    /v1/batch, where a batch-level `sentAt` stands for messages without one."""
    if route != "batch":
        return [("", body)]
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise Rejected("batch must be a list of messages")
    if not batch:
        raise Rejected("batch is empty")
    if len(batch) > BATCH_MAX_MESSAGES:
        raise TooLarge(f"batch has {len(batch)} messages; at most {BATCH_MAX_MESSAGES} are allowed")
    sent = body.get("sentAt") if parse(body.get("sentAt")) else None
    return [
        (f"batch[{i}].", {**m, "sentAt": sent} if sent and _lacks_sent_at(m) else m)
        for i, m in enumerate(batch)
    ]


def _lacks_sent_at(message: object) -> bool:
    return isinstance(message, dict) and message.get("sentAt") in (None, "")


def validate(
    message: object,
    path: str,
    route: str,
    small: bool = False,
    storable: bool = False,
    shallow: bool = False,
) -> str:
    """The message type, or Rejected naming the first bad field. `small`:
    the whole body is within MESSAGE_LIMIT, so its size need not be measured;
    `storable` and `shallow`: what decode_body found its bytes rule out."""
    where = path.rstrip(".") or "body"
    if not isinstance(message, dict):
        raise Rejected(f"{where} must be a JSON object")
    kind = _check_kind(message, path, route)
    _check_ids(message, path)
    if not (storable and shallow):
        _check_text(message, path, storable)
    if not small:
        size = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MESSAGE_LIMIT:
            raise TooLarge(f"{where} is {size} bytes; a message may be at most 32 KB")
    _check_shapes(message, path)
    _check_times(message, path)
    return kind


def _name(path: str, keys: tuple) -> str:
    """A field's name for an answer: properties.items[0].x (made only for one)."""
    where = path.rstrip(".")
    for key in keys:
        where = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip(".")
    return where


def _check_text(message: dict, path: str, storable: bool = False) -> None:
    """Every key and string, at any depth, can be stored (no NUL, no lone
    surrogate; not looked for when `storable`), and nothing is nested deeper
    than DEPTH_MAX."""
    stack: list[tuple[object, tuple, int]] = [(message, (), 1)]
    while stack:
        value, keys, depth = stack.pop()
        if depth > DEPTH_MAX:
            raise Rejected(f"{_name(path, keys)} is nested deeper than {DEPTH_MAX} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if not storable:
                if isinstance(key, str) and UNSTORABLE.search(key):
                    where = _name(path, keys) or "body"
                    raise Rejected(f"{where} has a key with NUL or a lone surrogate")
                if isinstance(item, str) and UNSTORABLE.search(item):
                    name = _name(path, (*keys, key))
                    raise Rejected(f"{name} holds NUL or a lone surrogate, which cannot be stored")
            if isinstance(item, dict | list):
                stack.append((item, (*keys, key), depth + 1))


def _check_times(message: dict, path: str) -> None:
    """The sender's clock can be corrected within the dates UTC can hold."""
    original, sent = parse(message.get("originalTimestamp")), parse(message.get("sentAt"))
    if original and sent:
        try:
            datetime.now(UTC) - (sent - original)
        except OverflowError:
            raise Rejected(
                f"{path}originalTimestamp is too far from sentAt to correct the clock"
            ) from None


def _check_kind(message: dict, path: str, route: str) -> str:
    if route == "batch" and "type" not in message:
        raise Rejected(f"{path}type is required")
    kind = message.get("type") if route == "batch" else route
    if kind not in TYPES:
        raise Rejected(f"{path}type must be one of {', '.join(TYPES)}")
    if kind == "track":
        event = message.get("event")
        if not isinstance(event, str) or not event.strip():
            raise Rejected(f"{path}event is required for a track message")
        if len(event) > NAME_MAX:
            raise Rejected(f"{path}event is longer than {NAME_MAX} characters")
        if "\x00" in event:
            raise Rejected(f"{path}event may not contain NUL characters")
    return kind


def _check_ids(message: dict, path: str) -> None:
    for name, limit in (
        ("messageId", 100),
        ("userId", ID_MAX),
        ("anonymousId", ID_MAX),
        ("previousId", ID_MAX),
    ):
        value = message.get(name)
        if value is None:
            continue
        if (
            not isinstance(value, str | int)
            or isinstance(value, bool)
            or (name == "messageId" and not isinstance(value, str))
        ):
            raise Rejected(f"{path}{name} must be a string")
        if len(str(value)) > limit:
            raise Rejected(f"{path}{name} is longer than {limit} characters")
        if "\x00" in str(value):
            raise Rejected(f"{path}{name} may not contain NUL characters")
    if all(message.get(name) in (None, "") for name in ("userId", "anonymousId")):
        raise Rejected(f"{path}userId or {path}anonymousId is required")


def _check_shapes(message: dict, path: str) -> None:
    for name in ("properties", "traits", "context"):
        if message.get(name) is not None and not isinstance(message[name], dict):
            raise Rejected(f"{path}{name} must be an object")
    if message.get("name") is not None and not isinstance(message["name"], str):
        raise Rejected(f"{path}name must be a string")
    context = message.get("context") or {}
    for name in ("page", "traits"):
        if context.get(name) is not None and not isinstance(context[name], dict):
            raise Rejected(f"{path}context.{name} must be an object")
    for name in ("ip", "userAgent", "twclid"):
        if context.get(name) is not None and not isinstance(context[name], str):
            raise Rejected(f"{path}context.{name} must be a string")
    if context.get("ip"):
        try:
            ipaddress.ip_address(context["ip"].strip())
        except ValueError:
            raise Rejected(f"{path}context.ip is not an IP address") from None
    for name in ("timestamp", "originalTimestamp", "sentAt"):
        if message.get(name) is not None and parse(message[name]) is None:
            raise Rejected(f"{path}{name} is not an ISO 8601 date")
