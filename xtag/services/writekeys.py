"""Write key -> the site's collector rules, cached per process for a few
seconds so the collector costs no database query per request (unknown keys
are cached too), a rotated key until its grace period ends. Configuration
changes forget the cache."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, select

from xtag.core.messages import SiteRules
from xtag.models import Site, utcnow

_cache: dict[str, tuple[float, SiteRules | None]] = {}
_CACHE_MAX = 10_000


def site_rules(row: Any) -> SiteRules:
    """The collector's rules from a site (a Site, or a row of its columns)."""
    return SiteRules(
        id=row.id,
        allowed_origins=tuple(o.rstrip("/").lower() for o in row.allowed_origins or ()),
        default_phone_region=row.default_phone_region,
        require_consent=row.require_consent,
        rate_limit=row.rate_limit,
    )


def lookup(engine: Engine, write_key: str, ttl: float) -> SiteRules | None:
    now = time.monotonic()
    hit = _cache.get(write_key)
    if hit is not None and hit[0] > now:
        return hit[1]
    query = select(
        Site.id,
        Site.allowed_origins,
        Site.default_phone_region,
        Site.require_consent,
        Site.rate_limit,
    ).where(
        (Site.write_key == write_key)
        | ((Site.previous_write_key == write_key) & (Site.previous_write_key_until > utcnow()))
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    rules = site_rules(row) if row is not None else None
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[write_key] = (now + ttl, rules)
    return rules


def forget() -> None:
    """Drop the cache (tests, and after a site changes in this process)."""
    _cache.clear()
