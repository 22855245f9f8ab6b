"""Checks for configuration input, shared by the management API and the admin.

Pure: each check takes a value and returns it cleaned, or raises Invalid
with a message that says what is wrong.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

import phonenumbers

from xtag.core.errors import Invalid
from xtag.core.mapping import OVERRIDABLE, valid_path

# What each kind of connection to X needs (oauth2 may also hold client_secret, expires_at)
CREDENTIALS = {
    "oauth1": ("consumer_key", "consumer_secret", "access_token", "access_token_secret"),
    "pixel_token": ("token",),
    "oauth2": ("client_id", "access_token", "refresh_token"),
}
OPTIONAL_CREDENTIALS = {"oauth2": ("client_secret", "expires_at")}
BASE36 = re.compile(r"^[0-9a-z]{1,32}$")
LONG_EVENT = re.compile(r"^tw-([0-9a-z]+)-([0-9a-z]+)$")


def pixel_id(value: str, name: str = "pixel_id") -> str:
    cleaned = value.strip().lower()
    if not BASE36.match(cleaned):
        raise Invalid(f"{name} must be X's base-36 pixel id, e.g. o8z6j", name)
    return cleaned


def site_pixel_id(value: str) -> str:
    return pixel_id(value, "x_pixel_id")


SILENCE_HOURS_MAX = 24 * 366


def silence_hours(value: float) -> float:
    """Hours without events before a site's silence alert: over 0, at most a year."""
    if not 0 < value <= SILENCE_HOURS_MAX:  # NaN fails both
        raise Invalid(
            f"silence_alert_hours must be over 0 and at most {SILENCE_HOURS_MAX} (null: no alert)",
            "silence_alert_hours",
        )
    return float(value)


def x_event_id(value: str, pixel: str | None = None) -> str:
    """An event id in short (o87ne) or long (tw-<pixel>-<event>) form; the
    long form must name the mapping's pixel."""
    cleaned = value.strip().lower()
    long_form = LONG_EVENT.match(cleaned)
    if long_form:
        if pixel is not None and long_form.group(1) != pixel:
            raise Invalid(
                f"x_event_id {cleaned} belongs to pixel {long_form.group(1)}, not {pixel}",
                "x_event_id",
            )
        return cleaned
    if not BASE36.match(cleaned):
        raise Invalid(
            "x_event_id must be a base-36 event id (o87ne) or tw-<pixel>-<event>", "x_event_id"
        )
    return cleaned


def rate_limit(value: int) -> int:
    if value < 1:
        raise Invalid(
            "rate_limit must be at least 1 event per second (null: the default)", "rate_limit"
        )
    return value


def origins(values: list[str]) -> list[str]:
    cleaned = []
    for value in values:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid(
                f"{value!r} is not an origin like https://shop.example", "allowed_origins"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise Invalid(f"{value!r} must be scheme and host (and port) only", "allowed_origins")
        origin = f"{parts.scheme}://{parts.hostname}"
        if parts.port:
            origin += f":{parts.port}"
        cleaned.append(origin.lower())
    return sorted(set(cleaned))


def phone_region(value: str) -> str:
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise Invalid(
            f"{value!r} is not an ISO 3166 alpha-2 region phonenumbers knows (e.g. US, GB, DE)",
            "default_phone_region",
        )
    return code


def field_overrides(value: dict) -> dict:
    for name, path in value.items():
        if name not in OVERRIDABLE:
            raise Invalid(
                f"fields.{name} cannot be overridden; use one of: {', '.join(OVERRIDABLE)}",
                "fields",
            )
        if not valid_path(path):
            raise Invalid(
                f"fields.{name} must be a dotted path into the message, e.g. properties.total",
                "fields",
            )
    return dict(value)


def credentials(auth_type: str, values: dict) -> dict:
    """Complete credentials for the connection type, all strings (expires_at a number)."""
    missing = [name for name in CREDENTIALS[auth_type] if not values.get(name)]
    if missing:
        raise Invalid(f"{auth_type} credentials need {', '.join(missing)}", "credentials")
    allowed = {*CREDENTIALS[auth_type], *OPTIONAL_CREDENTIALS.get(auth_type, ())}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise Invalid(f"unknown credential field {unknown[0]} for {auth_type}", "credentials")
    for name, value in values.items():
        kind = (int, float) if name == "expires_at" else str
        if not isinstance(value, kind) or isinstance(value, bool):
            raise Invalid(
                f"credentials.{name} must be a {'number' if name == 'expires_at' else 'string'}",
                "credentials",
            )
    return dict(values)


def expires_at(credentials: dict) -> datetime | None:
    """When an OAuth 2.0 access token expires, if the credentials say."""
    value = credentials.get("expires_at")
    if value in (None, ""):
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


PASSWORD_MIN = 12
# The most common passwords of at least PASSWORD_MIN characters (breach corpora)
COMMON_PASSWORDS = frozenset(
    [
        "123456789012",
        "1234567890123",
        "12345678910",
        "123456789123",
        "1q2w3e4r5t6y",
        "qwertyuiop12",
        "qwertyuiopasdfghjkl",
        "1qaz2wsx3edc",
        "passwordpassword",
        "password1234",
        "password12345",
        "password123456",
        "iloveyou1234",
        "administrator",
        "admin1234567",
        "adminadmin12",
        "letmein12345",
        "welcome12345",
        "changeme1234",
        "trustno1trustno1",
        "qwerty123456",
        "abcdefghijkl",
        "abc123456789",
        "000000000000",
        "111111111111",
        "123123123123",
        "aaaaaaaaaaaa",
        "correcthorsebatterystaple",
        "monkey123456",
        "dragon123456",
        "football1234",
        "baseball1234",
        "superman1234",
        "sunshine1234",
        "princess1234",
        "starwars1234",
        "whatever1234",
        "qazwsxedcrfv",
        "zaq12wsxcde3",
        "asdfghjkl123",
    ]
)


def password(value: str) -> str:
    """A new password: long enough, and not one every attacker tries first."""
    if len(value) < PASSWORD_MIN:
        raise Invalid(f"password must be at least {PASSWORD_MIN} characters", "password")
    if value.lower() in COMMON_PASSWORDS or len(set(value)) < 4:
        raise Invalid("password is one of the most common passwords; choose another", "password")
    return value
