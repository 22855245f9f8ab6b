"""The management API: JSON under /api/v1/, bearer tokens, an OpenAPI
document. HTTP only: rules and changes live in xtag.services."""

from xtag.api import alerts, insights  # noqa: F401  (their routes join bp)
from xtag.api.views import bp

__all__ = ["bp"]
