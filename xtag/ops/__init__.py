"""Operator endpoints: health, readiness and Prometheus metrics."""

from xtag.ops.views import bp

__all__ = ["bp"]
