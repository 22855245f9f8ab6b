"""The browser admin: one module per resource, each adding its pages to the
blueprint in `base`. Pages read through models and services.queries and
change things only through xtag.services."""

from xtag.admin import (  # noqa: F401  (each module adds its routes to bp)
    audit,
    auth,
    connections,
    dashboard,
    deadletters,
    deliveries,
    events,
    mappings,
    replays,
    settings,
    sites,
    users,
)
from xtag.admin.base import bp

__all__ = ["bp"]
