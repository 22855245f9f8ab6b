"""The site's X pixel script (the collector serves it as /v1/pixel.js): it
fires the site's own X pixel (x_pixel_id) with the conversion id the server
sends for the same event, so X counts the pair once.

Empty when the site has no pixel or is in test mode. It holds only the
pixel id, event names, X event ids and message paths: nothing secret. Kept
per process as long as the write key cache keeps a site; configuration
changes in this process forget it at once."""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path

from flask import current_app
from sqlalchemy import select

from xtag.core import identity
from xtag.core.checks import LONG_EVENT
from xtag.models import Mapping, Pixel, Site

SCRIPT = Path(__file__).resolve().parents[2] / "static" / "xtag-pixel.js"
PLACEHOLDER = "XTAG_PIXEL_CONFIG"
# Where the server resolves a conversion_id path, the browser sees the same value
# only under these roots (the server drops the context's identifiers, hashes
# visitor ids and computes its own timestamp).
SAME_IN_BROWSER = ("messageId", "event", "type", "properties", "context")
CONTEXT_REMOVED = ("traits", "ip", "userAgent", "twclid", "device")

_cache: dict[int, tuple[float, str]] = {}  # site id -> (until when, script)


@cache
def _template() -> str:
    text = SCRIPT.read_text()
    if text.count(PLACEHOLDER) != 1:
        raise RuntimeError(f"{SCRIPT} must hold {PLACEHOLDER} exactly once")
    return text


def event_id(x_event_id: str, pixel_id: str) -> str:
    """The pixel's name for an event: tw-<pixel>-<event>."""
    return x_event_id if LONG_EVENT.match(x_event_id) else f"tw-{pixel_id}-{x_event_id}"


def mirrored(path: str | None) -> bool:
    """A conversion_id path the browser resolves to what the server does
    (None: the default, properties.conversion_id / order_id / messageId)."""
    if path is None:
        return True
    parts = path.split(".")
    if parts[0] not in SAME_IN_BROWSER:
        return False
    if parts[0] == "context" and len(parts) > 1 and parts[1] in CONTEXT_REMOVED:
        return False
    return not any(_personal(part) for part in parts)


def _personal(key: str) -> bool:
    """A key under which the server drops or hashes the value (an email, a phone)."""
    name = key.lower().replace("-", "_")
    return (
        "@" in key
        or key in identity.EMAIL_KEYS
        or any(word in name for word in identity.PHONE_WORDS)
        or name in identity.PHONE_NAMES
    )


def config(site_id: int) -> dict | None:
    """What the pixel script needs, or None when it must fire nothing."""
    engine = current_app.extensions["xtag_engine"]
    with engine.connect() as connection:
        site = connection.execute(
            select(Site.x_pixel_id, Site.test_mode, Site.require_consent).where(Site.id == site_id)
        ).first()
        if site is None or not site.x_pixel_id or site.test_mode:
            return None
        rows = connection.execute(
            select(Mapping.event_name, Mapping.x_event_id, Mapping.fields)
            .join(Pixel, Mapping.pixel_key == Pixel.id)
            .where(
                Mapping.site_id == site_id,
                Mapping.enabled.is_(True),
                Pixel.pixel_id == site.x_pixel_id,
            )
            .order_by(Mapping.id)
        ).all()
    rules = []
    for row in rows:
        path = (row.fields or {}).get("conversion_id")
        # the server matches the event name as it scrubbed it (emails hashed)
        if identity.scrub(row.event_name) != row.event_name or not mirrored(path):
            continue
        rule = {"event": row.event_name, "event_id": event_id(row.x_event_id, site.x_pixel_id)}
        rules.append(rule | {"conversion_id": path})
    if not rules:
        return None
    return {"pixel_id": site.x_pixel_id, "require_consent": site.require_consent, "rules": rules}


def script(site_id: int) -> str:
    """The script for a site, kept as long as the write key cache keeps a site."""
    now = time.monotonic()
    hit = _cache.get(site_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    found = config(site_id)
    body = "" if found is None else _template().replace(PLACEHOLDER, json.dumps(found), 1)
    ttl = current_app.config["XTAG_SITE_CACHE_SECONDS"]
    if ttl > 0:
        _cache[site_id] = (now + ttl, body)
    return body


def forget() -> None:
    """Drop the kept scripts (after a configuration change in this process)."""
    _cache.clear()
