"""X's rules for a conversions request body: one conversion, or a batch of at most 500."""

from __future__ import annotations

import ipaddress
import re
import time
from decimal import Decimal
from typing import Any

MAX_CONVERSIONS = 500

_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_BASE36 = re.compile(r"[0-9a-z]+")
_LONG_EVENT = re.compile(r"tw-([0-9a-z]+)-([0-9a-z]+)")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")

_IDENTIFIER_KEYS = {"twclid", "hashed_email", "hashed_phone_number", "ip_address", "user_agent"}
_STRONG_IDENTIFIERS = {"twclid", "hashed_email", "hashed_phone_number"}
_CONVERSION_KEYS = {
    "conversion_time",
    "event_id",
    "identifiers",
    "number_items",
    "price_currency",
    "value",
    "conversion_id",
    "description",
    "contents",
}
_CONTENT_KEYS = {
    "content_id",
    "content_group_id",
    "content_name",
    "content_price",
    "content_type",
    "num_items",
}


class _Problems:
    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def add(self, parameter: str, message: str) -> None:
        self.errors.append(
            {"code": "INVALID_PARAMETER", "message": message, "parameter": parameter}
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_decimal_with_point(value: Any) -> bool:
    """A string like "20.00", or a JSON number written with a decimal point (parsed as Decimal)."""
    if isinstance(value, str):
        return _DECIMAL.fullmatch(value) is not None
    if isinstance(value, Decimal):
        text = str(value)
        return value.is_finite() and value >= 0 and "." in text and "E" not in text.upper()
    return False


def _check_time(conversion: dict, where: str, problems: _Problems) -> None:
    value = conversion.get("conversion_time")
    if value is None:
        problems.add("conversion_time", f"{where}.conversion_time is required")
        return
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        problems.add(
            "conversion_time",
            f"{where}.conversion_time ({value}) must be ISO 8601 UTC with milliseconds and a Z, "
            "e.g. 2022-02-18T01:14:00.603Z",
        )
        return
    try:
        time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        problems.add("conversion_time", f"{where}.conversion_time ({value}) is not a valid time")


def _check_event(
    conversion: dict, where: str, pixel_id: str, known: set[str] | None, problems: _Problems
) -> None:
    value = conversion.get("event_id")
    if value is None:
        problems.add("event_id", f"{where}.event_id is required")
        return
    if not isinstance(value, str):
        problems.add("event_id", f"{where}.event_id must be a string")
        return
    long_form = _LONG_EVENT.fullmatch(value)
    if long_form:
        pixel, event = long_form.groups()
        if pixel != pixel_id:
            problems.add(
                "event_id", f"event_id ({value}) does not belong to the pixel {pixel_id} in the URL"
            )
            return
    elif _BASE36.fullmatch(value):
        event = value
    else:
        problems.add("event_id", f"event_id ({value}) is not a valid event id")
        return
    if known is not None and event not in known:
        problems.add("event_id", f"event_id ({value}) is not a single event tag (SET)")


def _check_identifier_value(key: str, value: Any, where: str, problems: _Problems) -> None:
    if not isinstance(value, str) or not value:
        problems.add(key, f"{where}.{key} must be a non-empty string")
    elif key in ("hashed_email", "hashed_phone_number") and not _SHA256_HEX.fullmatch(value):
        problems.add(key, f"{where}.{key} must be a SHA-256 hash: 64 lower-case hex characters")
    elif key == "ip_address":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            problems.add(key, f"{where}.ip_address ({value}) is not an IP address")


def _check_identifiers(conversion: dict, where: str, problems: _Problems) -> None:
    identifiers = conversion.get("identifiers")
    if identifiers is None:
        problems.add("identifiers", f"{where}.identifiers is required")
        return
    if not isinstance(identifiers, list) or not identifiers:
        problems.add("identifiers", f"{where}.identifiers must be a non-empty list of objects")
        return
    strong = False
    for j, identifier in enumerate(identifiers):
        here = f"{where}.identifiers[{j}]"
        if not isinstance(identifier, dict) or not identifier:
            problems.add("identifiers", f"{here} must be a non-empty object")
            continue
        for key, value in identifier.items():
            if key not in _IDENTIFIER_KEYS:
                problems.add(key, f"{here}.{key} is not a known identifier")
                continue
            strong = strong or key in _STRONG_IDENTIFIERS
            _check_identifier_value(key, value, here, problems)
    if not strong:
        problems.add(
            "identifiers",
            f"{where}.identifiers needs at least one of twclid, hashed_email or "
            "hashed_phone_number (ip_address and user_agent alone are not enough)",
        )


def _check_contents(conversion: dict, where: str, problems: _Problems) -> None:
    contents = conversion["contents"]
    if not isinstance(contents, list):
        problems.add("contents", f"{where}.contents must be a list of objects")
        return
    for j, content in enumerate(contents):
        here = f"{where}.contents[{j}]"
        if not isinstance(content, dict):
            problems.add("contents", f"{here} must be an object")
            continue
        for key, value in content.items():
            if key not in _CONTENT_KEYS:
                problems.add(key, f"{here}.{key} is not a known content parameter")
            elif key == "content_price":
                if not _is_decimal_with_point(value):
                    problems.add(key, f"{here}.content_price ({value}) must be a decimal like 9.99")
            elif key == "num_items":
                if not _is_int(value) or value <= 0:
                    problems.add(key, f"{here}.num_items ({value}) must be an integer > 0")
            elif not isinstance(value, str):
                problems.add(key, f"{here}.{key} must be a string")


def _check_optional(conversion: dict, where: str, problems: _Problems) -> None:
    if "number_items" in conversion:
        value = conversion["number_items"]
        if not _is_int(value) or value <= 0:
            problems.add("number_items", f"{where}.number_items ({value}) must be an integer > 0")
    if "price_currency" in conversion:
        value = conversion["price_currency"]
        if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
            problems.add(
                "price_currency", f"{where}.price_currency ({value}) must be an ISO-4217 code"
            )
    if "value" in conversion and not _is_decimal_with_point(conversion["value"]):
        problems.add("value", f"{where}.value ({conversion['value']}) must be a decimal like 20.00")
    for key in ("conversion_id", "description"):
        if key in conversion and not isinstance(conversion[key], str):
            problems.add(key, f"{where}.{key} must be a string")
    if "contents" in conversion:
        _check_contents(conversion, where, problems)


def validate_conversion(
    conversion: Any, where: str, pixel_id: str, known_events: set[str] | None = None
) -> list[dict[str, str]]:
    """X's rules for one conversion; returns error objects (empty when valid).

    Numbers in ``conversion`` should come from ``json.loads(..., parse_float=Decimal)``
    so that ``20.00`` (decimal point) and ``20`` (integer) can be told apart.
    """
    problems = _Problems()
    if not isinstance(conversion, dict):
        problems.add("conversions", f"{where} must be an object")
        return problems.errors
    for key in sorted(set(conversion) - _CONVERSION_KEYS):
        problems.add(key, f"{where}.{key} is not a known parameter")
    _check_time(conversion, where, problems)
    _check_event(conversion, where, pixel_id, known_events, problems)
    _check_identifiers(conversion, where, problems)
    _check_optional(conversion, where, problems)
    return problems.errors


def validate_batch(
    payload: Any, pixel_id: str, known_events: set[str] | None = None
) -> list[dict[str, str]]:
    """X's rules for a request body; returns error objects (empty when valid)."""
    problems = _Problems()
    if not isinstance(payload, dict):
        problems.add("conversions", "the body must be a JSON object with a conversions list")
        return problems.errors
    for key in sorted(set(payload) - {"conversions"}):
        problems.add(key, f"{key} is not a known parameter")
    conversions = payload.get("conversions")
    if not isinstance(conversions, list) or not conversions:
        problems.add("conversions", "conversions must be a list of 1 to 500 conversions")
        return problems.errors
    if len(conversions) > MAX_CONVERSIONS:
        problems.add(
            "conversions",
            f"conversions has {len(conversions)} items; at most {MAX_CONVERSIONS} are allowed",
        )
        return problems.errors
    for i, conversion in enumerate(conversions):
        problems.errors.extend(
            validate_conversion(conversion, f"conversions[{i}]", pixel_id, known_events)
        )
    return problems.errors
