"""From an accepted message to the event that is queued: its time, consent,
integrations, who sent it, the identifiers X matches on (hashed, with where
each came from) and the message itself without traits or raw PII.

Pure functions over plain data, shared by the collector and the preview."""

from __future__ import annotations

import uuid
from datetime import datetime

from xtag.core import identity
from xtag.core.messages import RequestFacts, SiteRules
from xtag.core.times import iso_ms, parse

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
