"""Typed SQLAlchemy 2 models, by what they hold: people, configuration,
traffic (events and deliveries) and operations (audit, replays, alerts)."""

from xtag.models.base import (
    AUTH_TYPES,
    ROLES,
    BigId,
    UTCDateTime,
    new_write_key,
    token_hash,
    utcnow,
)
from xtag.models.configuration import Connection, Mapping, Pixel, Setting, Site
from xtag.models.operations import Alert, AuditEntry, Replay
from xtag.models.people import ApiToken, User
from xtag.models.traffic import Delivery, DeliveryAttempt, DeliveryItem, ReceivedEvent

__all__ = [
    "AUTH_TYPES", "ROLES", "Alert", "ApiToken", "AuditEntry", "BigId", "Connection",
    "Delivery", "DeliveryAttempt", "DeliveryItem", "Mapping", "Pixel", "ReceivedEvent",
    "Replay", "Setting", "Site", "UTCDateTime", "User", "new_write_key", "token_hash", "utcnow",
]  # fmt: skip
