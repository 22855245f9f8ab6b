"""The first-party collector: Segment's HTTP Tracking API, spoken natively.
HTTP only (read, authenticate, check the origin, hand off): the routes that
take events are a plain WSGI callable (xtag.collector.wsgi), the rest a
lean Flask app (views, sdks, pixel); their rules live in xtag.core.messages
and xtag.core.events, their hand-off in xtag.pipeline.inbox."""

from xtag.collector import pixel, sdks  # noqa: F401  (add their routes to bp)
from xtag.collector.views import bp
from xtag.collector.wsgi import Collector

# Every path the collector serves (xtag/__init__.py hands them to it)
PREFIXES = ("/v1/", "/beacon/", "/sourceConfig", "/analytics.js/", "/analytics-next/")

__all__ = ["PREFIXES", "Collector", "bp"]
