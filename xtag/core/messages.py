"""The collector's message rules: a request body -> validated, enriched,
PII-free events (validation, times, consent, identifiers).

Pure functions over plain data, so every rule of the collector contract can
be tested directly and reused by the preview and the bench.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

from xtag.core import identity
from xtag.core.times import iso_ms, parse

MESSAGE_LIMIT = 32 * 1024
DEPTH_MAX = 64  # levels of nesting in a message
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL and UTF-8 refuse them
BATCH_LIMIT = 500 * 1024
BATCH_MAX_MESSAGES = 2500
TYPES = ("track", "page", "identify", "screen", "group", "alias")
NAME_MAX = 200
ID_MAX = 200
# Names a site may give xtag in a message's `integrations` (case-insensitive)
INTEGRATION_NAMES = ("x", "twitter ads", "x ads", "xtag")
# Device ids a mobile SDK sends in context.device: kept only hashed
DEVICE_IDS = ("advertisingId", "id", "token")
# context.library.name of SDKs that run on the visitor's device, and on servers
DEVICE_LIBRARIES = (
    "analytics.js", "analytics-next", "analytics-ios", "analytics-android",
    "analytics-react-native", "analytics-flutter", "analytics-kotlin", "analytics-swift",
    "rudderstack-js", "rudder-sdk-js", "rudder-ios-library", "rudder-android-library",
    "rudder-sdk-ios", "rudder-sdk-android", "rudder-sdk-react-native", "rudder-sdk-flutter",
    "xtag.js",
)  # fmt: skip
SERVER_LIBRARIES = (
    "analytics-python", "analytics-node", "analytics-ruby", "analytics-go", "analytics-java",
    "analytics-php", "analytics-dotnet", "analytics.net", "@segment/analytics-node",
    "rudder-sdk-python", "rudder-sdk-node", "rudder-sdk-go", "rudder-sdk-java",
    "rudder-sdk-ruby", "rudder-sdk-php", "rudder-sdk-dotnet", "@rudderstack/rudder-sdk-node",
)  # fmt: skip
ADVERTISING = {"advertising", "ads", "marketing", "targeting", "ad_storage", "ad_user_data"}
DENIED = {"denied", "deny", "false", "no", "0", "off", "rejected"}
GRANTED = {"granted", "grant", "true", "yes", "1", "on", "accepted"}


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


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def decode_body(raw: bytes, content_encoding: str | None) -> tuple[dict, int]:
    """The JSON object in the body, gunzipped if need be, within BATCH_LIMIT,
    and its size in bytes."""
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
        body = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise Rejected("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Rejected("body must be a JSON object")
    return body, len(raw)


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


def validate(message: object, path: str, route: str, small: bool = False) -> str:
    """The message type, or Rejected naming the first bad field. `small`:
    the whole body is within MESSAGE_LIMIT, so its size need not be measured."""
    where = path.rstrip(".") or "body"
    if not isinstance(message, dict):
        raise Rejected(f"{where} must be a JSON object")
    kind = _check_kind(message, path, route)
    _check_ids(message, path)
    _check_text(message, path)
    if not small:
        size = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MESSAGE_LIMIT:
            raise TooLarge(f"{where} is {size} bytes; a message may be at most 32 KB")
    _check_shapes(message, path)
    _check_times(message, path)
    return kind


def _check_text(message: dict, path: str) -> None:
    """Every key and string, at any depth, can be stored (no NUL, no lone
    surrogate), and nothing is nested deeper than DEPTH_MAX."""
    stack: list[tuple[object, str, int]] = [(message, path.rstrip("."), 1)]
    while stack:
        value, where, depth = stack.pop()
        if depth > DEPTH_MAX:
            raise Rejected(f"{where} is nested deeper than {DEPTH_MAX} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            name = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip(".")
            if isinstance(key, str) and UNSTORABLE.search(key):
                raise Rejected(f"{where or 'body'} has a key with NUL or a lone surrogate")
            if isinstance(item, str):
                if UNSTORABLE.search(item):
                    raise Rejected(f"{name} holds NUL or a lone surrogate, which cannot be stored")
            elif isinstance(item, dict | list):
                stack.append((item, name, depth + 1))


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


def event_time(message: dict, received_at: datetime) -> datetime:
    """Segment's rule: `timestamp` if given, else the original time corrected
    for the sender's clock skew (sentAt vs received), else the receive time."""
    if message.get("timestamp"):
        return parse(message["timestamp"])
    original = parse(message.get("originalTimestamp"))
    sent = parse(message.get("sentAt"))
    if original and sent:
        return received_at - (sent - original)
    return original or received_at


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in DENIED:
            return False
        if text in GRANTED:
            return True
    return None


def consent(context: dict, gpc: bool) -> str | None:
    """'denied', 'granted' or None (not stated) for advertising use."""
    if gpc:
        return "denied"
    raw = context.get("consent")
    verdicts: list[bool] = []
    if isinstance(raw, dict):
        prefs = raw.get("categoryPreferences")
        for source in (prefs if isinstance(prefs, dict) else {}, raw):
            verdicts += [_flag(v) for k, v in source.items() if str(k).lower() in ADVERTISING]
    elif raw is not None:
        verdicts.append(_flag(raw))
    managed = context.get("consentManagement")
    if isinstance(managed, dict):
        for key, verdict in (("deniedConsentIds", False), ("allowedConsentIds", True)):
            ids = managed.get(key)
            if isinstance(ids, list) and any(str(i).lower() in ADVERTISING for i in ids):
                verdicts.append(verdict)
    if False in verdicts:
        return "denied"
    if True in verdicts:
        return "granted"
    return None


def forwarded_to_x(message: dict) -> bool:
    """Segment's `integrations`: False for xtag by any of its names, or
    `All: false` without one of them switched on, keeps the event from X."""
    chosen = message.get("integrations")
    if not isinstance(chosen, dict):
        return True
    lowered = {str(k).strip().lower(): v for k, v in chosen.items()}
    ours = [lowered[name] for name in INTEGRATION_NAMES if name in lowered]
    if any(value is False for value in ours):
        return False
    if lowered.get("all") is False:
        return any(value is True or isinstance(value, dict) for value in ours)
    return True


def from_device(message: dict, facts: RequestFacts) -> bool:
    """Whether the request's own address and user agent are the visitor's:
    sent by a browser or a mobile SDK, not by a server library."""
    library = (message.get("context") or {}).get("library")
    name = library.get("name") if isinstance(library, dict) else None
    name = name.strip().lower() if isinstance(name, str) else ""
    if name in SERVER_LIBRARIES:
        return False
    return name in DEVICE_LIBRARIES or facts.browser


def twclid_of(message: dict, facts: RequestFacts) -> tuple[str | None, str | None]:
    """The click id and where it came from: the message, else the cookie."""
    context = message.get("context") or {}
    properties = message.get("properties") or {}
    page = context.get("page") if isinstance(context.get("page"), dict) else {}
    given = (
        identity.clean_twclid(context.get("twclid"))
        or identity.clean_twclid(properties.get("twclid"))
        or identity.twclid_from_url(page.get("url"))
        or identity.twclid_from_url(properties.get("url"))
    )
    if given:
        return given, "message"
    cookie = identity.clean_twclid(facts.cookie_twclid)
    return (cookie, "cookie") if cookie else (None, None)


def identifiers_of(
    message: dict, site: SiteRules, facts: RequestFacts
) -> tuple[dict[str, str], dict[str, str]]:
    """X's identifiers for this message, hashed, and where each came from
    (message, cookie or request); IP and user agent included here and kept
    or dropped by the mapping (they only count alongside others)."""
    context = message.get("context") or {}
    own = message.get("traits") if message.get("type") != "group" else None  # a group's traits
    sources = [
        s for s in (own, context.get("traits"), message.get("properties")) if isinstance(s, dict)
    ]
    region = site.default_phone_region
    device = from_device(message, facts)
    twclid, twclid_source = twclid_of(message, facts)
    given = {
        "twclid": twclid if twclid_source == "message" else None,
        "hashed_email": identity.first_hashed(sources, identity.EMAIL_KEYS, identity.hash_email),
        "hashed_phone_number": identity.first_hashed(
            sources, identity.PHONE_KEYS, lambda v: identity.hash_phone(v, region)
        ),
        "ip_address": (context.get("ip") or "").strip(),
        "user_agent": (context.get("userAgent") or "").strip()[:512],
    }
    taken = {
        "twclid": twclid if twclid_source == "cookie" else None,
        "ip_address": facts.ip if device else None,
        "user_agent": facts.user_agent if device else None,
    }
    origin = {k: "message" for k, v in given.items() if v}
    for name, value in taken.items():
        if value and name not in origin:
            origin[name] = "cookie" if name == "twclid" else "request"
    found = {k: given[k] or taken.get(k) for k in origin}
    return found, origin


def _device(context: dict) -> dict | None:
    """context.device with its ids hashed: a device id is as personal as an email."""
    device = context.get("device")
    if not isinstance(device, dict):
        return None
    return {
        k: identity.sha256_hex(str(v)) if k in DEVICE_IDS and v not in (None, "") else v
        for k, v in device.items()
    }


def prepare(message: dict, kind: str, site: SiteRules, facts: RequestFacts) -> dict:
    """The event as it is queued: the message without traits or raw PII, plus
    what xtag derived from it. Nothing in it needs hashing any more."""
    context = message.get("context") or {}
    kept_context = {
        k: v for k, v in context.items() if k not in ("traits", "ip", "userAgent", "twclid")
    }
    if "device" in kept_context:
        kept_context["device"] = _device(context)
    state = consent(context, facts.gpc)
    denied = state == "denied" or (site.require_consent and state != "granted")
    drop = "consent" if denied else None if forwarded_to_x(message) else "integrations"
    found, sources = identifiers_of(message, site, facts)
    name = identity.scrub(message.get("event")) if kind == "track" else kind
    if kind in ("identify", "group", "alias"):
        name = None
    clean = {
        "type": kind,
        "event": name,
        "messageId": message.get("messageId") or f"xtag-{uuid.uuid4()}",
        "anonymousId": identity.scrub_id(message.get("anonymousId")),
        "userId": identity.scrub_id(message.get("userId")),
        "timestamp": iso_ms(event_time(message, facts.received_at)),
        "properties": identity.scrub(message.get("properties") or {}),
        "context": identity.scrub(kept_context),
    }
    if kind in ("page", "screen") and isinstance(message.get("name"), str):
        clean["name"] = identity.scrub(message["name"])
    if kind == "alias" and message.get("previousId") not in (None, ""):
        clean["previousId"] = identity.scrub_id(message["previousId"])
    return {
        "site_id": site.id,
        "received_at": iso_ms(facts.received_at),
        "message": clean,
        "identifiers": found,
        "sources": sources,
        "consent": state,
        "drop": drop,
    }
