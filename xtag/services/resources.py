"""The management API's resources, as schemas (see schema.py)."""

from __future__ import annotations

from xtag import validation
from xtag.mapping import OVERRIDABLE
from xtag.models import AUTH_TYPES, ROLES
from xtag.schema import Field, Schema

SITE = Schema(
    "Site",
    (
        Field("name", "string", "what the marketer calls this site", required=True, max_length=200),
        Field("write_key", "string", "the key sites send with events", read_only=True),
        Field(
            "allowed_origins",
            "array",
            "origins (scheme://host[:port]) whose pages may send events; empty allows all",
            items="string",
            example=["https://shop.example"],
        ),
        Field(
            "default_phone_region",
            "string",
            "ISO 3166 alpha-2 region for phone numbers without a country code",
            nullable=True,
            max_length=2,
            example="US",
        ),
        Field("require_consent", "boolean", "forward only events that carry advertising consent"),
        Field(
            "rate_limit",
            "integer",
            "events per second the collector accepts for this site (429 beyond it); "
            "null uses the server's XTAG_SITE_RATE_LIMIT",
            nullable=True,
            check=validation.rate_limit,
            example=1000,
        ),
        Field(
            "last_event_at",
            "string",
            "when the collector last recorded an event",
            read_only=True,
            nullable=True,
        ),
    ),
)

CONNECTION = Schema(
    "Connection",
    (
        Field("name", "string", "a label for this X account", required=True, max_length=200),
        Field(
            "auth_type",
            "string",
            "how requests to X are authenticated",
            required=True,
            enum=AUTH_TYPES,
        ),
        Field(
            "credentials",
            "object",
            "oauth1: consumer_key, consumer_secret, access_token, access_token_secret; "
            "pixel_token: token; oauth2: client_id, client_secret, access_token, refresh_token, "
            "expires_at. Write-only: responses show secrets masked (last 4 characters)",
            required=True,
        ),
        Field("status", "string", "healthy, unhealthy or unknown", read_only=True),
        Field("last_error", "string", "X's last refusal", read_only=True, nullable=True),
        Field(
            "token_expires_at",
            "string",
            "OAuth 2.0 access token expiry",
            read_only=True,
            nullable=True,
        ),
    ),
)

PIXEL = Schema(
    "Pixel",
    (
        Field(
            "pixel_id",
            "string",
            "X's base-36 pixel id",
            required=True,
            max_length=32,
            example="o8z6j",
        ),
        Field("name", "string", "a label", max_length=200),
        Field(
            "connection_id",
            "integer",
            "the connection that sends this pixel's conversions",
            nullable=True,
        ),
    ),
)

MAPPING = Schema(
    "Mapping",
    (
        Field("site_id", "integer", "the site whose events this maps", required=True),
        Field(
            "event_name",
            "string",
            "the incoming event name (page events: 'page')",
            required=True,
            max_length=200,
        ),
        Field("pixel", "integer", "the pixel's id in xtag", required=True),
        Field(
            "x_event_id",
            "string",
            "X's base-36 event id, or tw-<pixel>-<event>",
            required=True,
            max_length=64,
            example="o87ne",
        ),
        Field("enabled", "boolean", "whether events are forwarded"),
        Field(
            "description",
            "string",
            "sent to X as the conversion's description",
            nullable=True,
            max_length=500,
        ),
        Field(
            "fields",
            "object",
            "overrides, as dotted paths into the message, for: " + ", ".join(OVERRIDABLE),
            example={"value": "properties.total"},
        ),
    ),
)

PREVIEW = Schema(
    "PreviewRequest",
    (
        Field("site_id", "integer", "the site whose mappings apply", required=True),
        Field("message", "object", "a Segment message, as a site would send it", required=True),
    ),
)

USER = Schema(
    "User",
    (
        Field(
            "email", "string", "the login", required=True, max_length=254, example="ann@example.com"
        ),
        Field("role", "string", "marketer or admin", required=True, enum=ROLES),
        Field("active", "boolean", "inactive users cannot log in or use their tokens"),
        Field(
            "password",
            "string",
            "at least 8 characters; write-only",
            required=True,
            write_only=True,
        ),
        Field("last_login_at", "string", "last admin login", read_only=True, nullable=True),
    ),
)
