"""A queued event plus the site's mappings for its name -> X conversions.

Pure functions over plain data: no Flask, RQ or database. The worker and the
mapping preview both call `conversions_for`, so a preview shows exactly what
would be sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from xtag.core import times

STRONG = ("twclid", "hashed_email", "hashed_phone_number")
FUTURE_SLACK = timedelta(minutes=5)
OVERRIDABLE = ("value", "currency", "contents", "conversion_id", "description", "number_items")
PATH = re.compile(r"^[A-Za-z_$][\w$-]*(\.[\w$-]+)*$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
TEXT_MAX = 500


@dataclass(frozen=True)
class Rule:
    """One enabled mapping, as the mapper needs it."""

    pixel_key: int
    pixel_id: str
    x_event_id: str
    description: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    conversions: list[tuple[Rule, dict]]
    reason: str | None = None  # why no conversion was made


def resolve(message: dict, path: str) -> object:
    """The value at a dotted path ('properties.order.total', 'properties.products.0.id')."""
    value: object = message
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def decimal_text(value: object) -> str | None:
    """A non-negative amount as a string with a decimal point ('20' -> '20.00')."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    if amount.as_tuple().exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    return format(amount, "f")


def positive_int(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not number.is_finite() or number != number.to_integral_value() or number <= 0:
        return None
    return int(number)


def text(value: object) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    result = str(value).strip()
    return result[:TEXT_MAX] if result else None


def currency(value: object) -> str | None:
    code = text(value)
    return code.upper() if code and CURRENCY.match(code.upper()) else None


def conversion_time(message: dict, received_at: str) -> str:
    """The event's time in X's format; a time well in the future becomes the receive time."""
    moment = times.parse(message.get("timestamp")) or times.parse(received_at)
    received = times.parse(received_at) or moment
    if moment - received > FUTURE_SLACK:
        moment = received
    return times.iso_ms(moment)


def contents(products: object) -> list[dict] | None:
    if not isinstance(products, list):
        return None
    items = []
    for product in products:
        if not isinstance(product, dict):
            continue
        item = {
            "content_id": text(_first(product, "product_id", "sku", "id", "content_id")),
            "content_group_id": text(product.get("content_group_id")),
            "content_name": text(_first(product, "name", "content_name")),
            "content_price": decimal_text(_first(product, "price", "content_price")),
            "num_items": positive_int(_first(product, "quantity", "num_items")),
            "content_type": text(_first(product, "category", "content_type")),
        }
        item = {k: v for k, v in item.items() if v is not None}
        if item:
            items.append(item)
    return items or None


def _first(source: dict, *keys: str) -> object:
    for key in keys:
        if source.get(key) not in (None, ""):
            return source[key]
    return None


def identifiers(found: dict[str, str]) -> list[dict] | None:
    """X's identifier list, or None when nothing X can match on is present:
    IP address and user agent only count alongside a strong identifier."""
    strong = [{key: found[key]} for key in STRONG if found.get(key)]
    if not strong:
        return None
    device = {k: found[k] for k in ("ip_address", "user_agent") if found.get(k)}
    return strong + ([device] if device else [])


# what a conversion carries that X matches on best, as bits (0: IP + user agent only)
MATCH_BITS = {"twclid": 1, "hashed_email": 2, "hashed_phone_number": 4}


def match_of(conversion: dict) -> int:
    """The match bits of a conversion's identifiers (see MATCH_BITS)."""
    present = {key for part in conversion.get("identifiers", ()) for key in part}
    return sum(bit for key, bit in MATCH_BITS.items() if key in present)


def _defaults(message: dict) -> dict[str, object]:
    props = message.get("properties") or {}
    products = contents(props.get("products"))
    quantities = [item["num_items"] for item in products or () if "num_items" in item]
    return {
        "value": decimal_text(_first(props, "value", "revenue", "total", "price")),
        "currency": currency(props.get("currency")),
        "contents": products,
        "number_items": sum(quantities) if quantities else positive_int(props.get("quantity")),
        "conversion_id": text(
            _first(props, "conversion_id", "order_id") or message.get("messageId")
        ),
    }


_CLEAN = {
    "value": decimal_text,
    "currency": currency,
    "contents": contents,
    "number_items": positive_int,
    "conversion_id": text,
    "description": text,
}


def conversion(event: dict, rule: Rule, ids: list[dict]) -> dict:
    message = event["message"]
    values = _defaults(message)
    values["description"] = text(rule.description) or text(message.get("event"))
    for name, path in rule.fields.items():
        if name in OVERRIDABLE:
            values[name] = _CLEAN[name](resolve(message, path))
    built = {
        "conversion_time": conversion_time(message, event["received_at"]),
        "event_id": rule.x_event_id,
        "identifiers": ids,
        "value": values["value"],
        "price_currency": values["currency"] or "USD",
        "number_items": values["number_items"],
        "conversion_id": values["conversion_id"],
        "description": values["description"],
        "contents": values["contents"],
    }
    return {k: v for k, v in built.items() if v is not None}


def conversions_for(event: dict, rules: list[Rule]) -> Result:
    """0..n conversions for one event: one per enabled mapping of its name.
    Without an identifier X can match on, the conversions are made without
    identifiers and the reason says so: they wait for their visitor's."""
    if not rules:
        return Result([], "unmapped")
    ids = identifiers(event.get("identifiers") or {})
    made = [(rule, conversion(event, rule, ids or [])) for rule in rules]
    return Result(made, None if ids else "no_identifier")


def outcome(
    event: dict, duplicate: bool, rules: list[Rule]
) -> tuple[str, str | None, Result | None]:
    """What becomes of a recorded event: (outcome, reason, conversions if any)."""
    message = event["message"]
    if event.get("drop"):  # decided by the collector: consent, integrations
        return "dropped", event["drop"], None
    if duplicate:
        return "dropped", "duplicate", None
    if message["type"] == "identify":
        return "identified", None, None
    if message["event"] is None:
        return "ignored", f"{message['type']} messages are not conversions", None
    result = conversions_for(event, rules)
    if result.reason == "unmapped":
        return "unmapped", None, None
    if result.reason == "no_identifier":  # until its batch: the visitor's may arrive
        return "waiting", "no_identifier", result
    return "forwarded", None, result


def valid_path(path: object) -> bool:
    return isinstance(path, str) and bool(PATH.match(path))
