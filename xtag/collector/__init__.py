"""The first-party collector: Segment's HTTP Tracking API, spoken natively.
HTTP only (read, authenticate, check the origin, hand off); its rules live in
xtag.core.messages, its hand-off in xtag.pipeline.inbox."""

from xtag.collector.views import bp

__all__ = ["bp"]
