"""The resources the admin and the management API manage: each one's fields
(one list: input checks, its JSON, its OpenAPI), the checks that need the
database, and how it is changed."""

from __future__ import annotations

from sqlalchemy import select

from xtag.core import checks
from xtag.core.errors import BadReference, Conflict, Invalid
from xtag.core.fields import Field, Schema
from xtag.core.mapping import OVERRIDABLE
from xtag.extensions import db
from xtag.models import AUTH_TYPES, ROLES, Connection, Mapping, Pixel, Site, User
from xtag.services.changes import Kind

PUBLIC_CREDENTIALS = ("client_id", "consumer_key", "expires_at")


def mask(value: object) -> str:
    """A secret shown as its last 4 characters at most, never in full."""
    text = str(value)
    return "****" + text[-4:] if len(text) >= 12 else "****"


def _masked(credentials: dict) -> dict:
    return {k: v if k in PUBLIC_CREDENTIALS else mask(v) for k, v in credentials.items()}


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
            check=checks.rate_limit,
            example=1000,
        ),
        Field(
            "test_mode",
            "boolean",
            "conversions are built and recorded as deliveries with status 'test'; "
            "nothing is sent to X",
        ),
        Field(
            "x_pixel_id",
            "string",
            "the site's X pixel: the beacon fires it with the conversion id the server "
            "sends, so X counts the conversion once (null: off)",
            nullable=True,
            max_length=32,
            check=checks.site_pixel_id,
            example="o8z6j",
        ),
        Field(
            "silence_alert_hours",
            "number",
            "alert when no event arrives for this many hours (null: off)",
            nullable=True,
            check=checks.silence_hours,
            example=6,
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
            show=_masked,
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
        Field("pixel", "integer", "the pixel's id in xtag", required=True, source="pixel_key"),
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
            "at least 12 characters, not a common one; write-only",
            required=True,
            write_only=True,
        ),
        Field("last_login_at", "string", "last admin login", read_only=True, nullable=True),
    ),
)


def _site_values(data: dict, row: Site | None) -> dict:
    values = dict(data)
    if "allowed_origins" in values:
        values["allowed_origins"] = checks.origins(values["allowed_origins"])
    if values.get("default_phone_region"):
        values["default_phone_region"] = checks.phone_region(values["default_phone_region"])
    return values


def _connection_values(data: dict, row: Connection | None) -> dict:
    values = dict(data)
    auth_type = values.get("auth_type") or row.auth_type
    if "credentials" in values or "auth_type" in values:
        given = values.pop("credentials", {})
        if row is not None and auth_type == row.auth_type:
            given = {**row.credentials, **given}  # write-only: send only what changes
        values["credentials"] = checks.credentials(auth_type, given)
        values["token_expires_at"] = checks.expires_at(values["credentials"])
    return values


def _pixel_values(data: dict, row: Pixel | None) -> dict:
    values = dict(data)
    if "pixel_id" in values:
        values["pixel_id"] = checks.pixel_id(values["pixel_id"])
        clash = db.session.scalar(select(Pixel.id).where(Pixel.pixel_id == values["pixel_id"]))
        if clash and (row is None or clash != row.id):
            raise Conflict(f"pixel {values['pixel_id']} exists already", "pixel_id")
    if values.get("connection_id") is not None and not db.session.get(
        Connection, values["connection_id"]
    ):
        raise BadReference(f"no connection with id {values['connection_id']}", "connection_id")
    return values


def _mapping_values(data: dict, row: Mapping | None) -> dict:
    values = dict(data)
    if "site_id" in values and not db.session.get(Site, values["site_id"]):
        raise BadReference(f"no site with id {values['site_id']}", "site_id")
    pixel_key = values.pop("pixel", row.pixel_key if row else None)
    pixel = db.session.get(Pixel, pixel_key) if pixel_key is not None else None
    if pixel is None:
        raise BadReference(f"no pixel with id {pixel_key}", "pixel")
    values["pixel_key"] = pixel.id
    event = values.get("x_event_id", row.x_event_id if row else "")
    values["x_event_id"] = checks.x_event_id(event, pixel.pixel_id)
    if "fields" in values:
        values["fields"] = checks.field_overrides(values["fields"])
    if "event_name" in values:
        values["event_name"] = values["event_name"].strip()
    return values


def _user_values(data: dict, row: User | None) -> dict:
    values = dict(data)
    if "email" in values:
        values["email"] = values["email"].strip().lower()
        if "@" not in values["email"]:
            raise Invalid("email must be an email address", "email")
        clash = db.session.scalar(select(User.id).where(User.email == values["email"]))
        if clash and (row is None or clash != row.id):
            raise Conflict(f"a user with email {values['email']} already exists", "email")
    if row is not None and ("role" in values or "active" in values):
        role, active = values.get("role", row.role), values.get("active", row.active)
        if role != "admin" or not active:
            _keep_an_admin(row, "role" if role != "admin" else "active")
    if row is not None and {"role", "active", "password"} & set(values):
        values["session_version"] = row.session_version + 1  # every session of theirs ends
    if "password" in values:
        password = checks.password(values.pop("password"))
        probe = User()
        probe.set_password(password)
        values["password_hash"] = probe.password_hash
    return values


def _keep_an_admin(user: User, field: str | None = None) -> None:
    """Nobody could manage users or connections any more without an active admin."""
    if not (user.is_admin and user.active):
        return
    admins = db.session.scalars(  # locked in one order, so two demotions cannot pass at once
        select(User.id)
        .where(User.role == "admin", User.active.is_(True))
        .order_by(User.id)
        .with_for_update()
    ).all()
    if not set(admins) - {user.id}:
        raise Invalid(
            f"{user.email} is the last active admin: make another user an admin first",
            field,
        )


SITES = Kind("site", Site, SITE, _site_values)
CONNECTIONS = Kind("connection", Connection, CONNECTION, _connection_values, ("credentials",))
PIXELS = Kind("pixel", Pixel, PIXEL, _pixel_values)
MAPPINGS = Kind("mapping", Mapping, MAPPING, _mapping_values)
USERS = Kind(
    "user", User, USER, _user_values, ("password_hash",), _keep_an_admin, ("session_version",)
)
