"""Write key -> the site's collector rules, cached per process for a few
seconds so the collector costs no database query per request, a rotated key
until its grace period ends. Unknown keys are cached apart, for a minute, at
most UNKNOWN_MAX of them (the oldest go first), so a flood of made-up keys
never evicts the known ones. Configuration changes forget the cache."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select

from xtag.core.messages import SiteRules
from xtag.models import Site, utcnow

_known: dict[str, tuple[float, SiteRules]] = {}
_unknown: OrderedDict[str, float] = OrderedDict()  # key -> until when it is known unknown
UNKNOWN_MAX = 10_000
UNKNOWN_SECONDS = 60


def site_rules(row: Any) -> SiteRules:
    """The collector's rules from a site (a Site, or a row of its columns)."""
    return SiteRules(
        id=row.id,
        allowed_origins=tuple(o.rstrip("/").lower() for o in row.allowed_origins or ()),
        default_phone_region=row.default_phone_region,
        require_consent=row.require_consent,
        rate_limit=row.rate_limit,
    )


def lookup(
    engine: Engine, write_key: str, ttl: float, before_query: Callable[[], None] | None = None
) -> SiteRules | None:
    """The site's rules, or None for an unknown key. `before_query` runs
    before the database is asked (it may refuse, e.g. to throttle)."""
    now = time.monotonic()
    hit = _known.get(write_key)
    if hit is not None and hit[0] > now:
        return hit[1]
    if _unknown.get(write_key, 0) > now:
        return None
    if before_query is not None:
        before_query()
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
    if row is None:
        _unknown[write_key] = now + max(ttl, UNKNOWN_SECONDS)
        _unknown.move_to_end(write_key)
        while len(_unknown) > UNKNOWN_MAX:
            _unknown.popitem(last=False)
        return None
    rules = site_rules(row)
    _known[write_key] = (now + ttl, rules)
    _unknown.pop(write_key, None)
    return rules


def forget() -> None:
    """Drop the caches (tests, and after a site changes in this process)."""
    _known.clear()
    _unknown.clear()
