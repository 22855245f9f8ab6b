"""The first-party collector: Segment's HTTP Tracking API, spoken natively.
HTTP only (read, authenticate, check the origin, hand off); its rules live in
xtag.core.messages and xtag.core.events, its hand-off in xtag.pipeline.inbox."""

from xtag.collector import pixel, sdks  # noqa: F401  (add their routes to bp)
from xtag.collector.views import bp

# Every path the collector app serves (xtag/__init__.py hands them to it)
PREFIXES = ("/v1/", "/beacon/", "/sourceConfig", "/analytics.js/", "/analytics-next/")

__all__ = ["PREFIXES", "bp"]
