"""The default mapping table of interfaces.md, overrides, and X's formatting rules."""

import pytest

from xtag.core import mapping
from xtag.core.mapping import Rule

HASHED = "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8"
RULE = Rule(pixel_key=1, pixel_id="o8z6j", x_event_id="o87ne")


def event(properties=None, identifiers=None, **message):
    return {
        "site_id": 1,
        "received_at": "2026-11-25T12:00:00.000Z",
        "message": {
            "type": "track",
            "event": "Order Completed",
            "messageId": "msg-1",
            "timestamp": "2026-11-25T11:59:58.123Z",
            "properties": properties or {},
            "context": {},
            **message,
        },
        "identifiers": {"twclid": "tw1"} if identifiers is None else identifiers,
    }


def convert(ev, rule=RULE) -> dict:
    [(got_rule, conversion)] = mapping.conversions_for(ev, [rule]).conversions
    assert got_rule == rule
    return conversion


def test_minimal_conversion_has_the_required_fields_and_defaults():
    assert convert(event()) == {
        "conversion_time": "2026-11-25T11:59:58.123Z",
        "event_id": "o87ne",
        "identifiers": [{"twclid": "tw1"}],
        "price_currency": "USD",
        "conversion_id": "msg-1",
        "description": "Order Completed",
    }


@pytest.mark.parametrize(
    ("properties", "value"),
    [
        ({"value": 20}, "20.00"),
        ({"revenue": "20"}, "20.00"),
        ({"total": 19.9}, "19.90"),
        ({"price": 5}, "5.00"),
        ({"value": "12.345"}, "12.345"),
        ({"revenue": 1, "total": 2}, "1.00"),
        ({"value": "abc"}, None),
        ({"value": -3}, None),
        ({"value": True}, None),
        ({"value": "NaN"}, None),
    ],
)
def test_value_first_present_with_a_decimal_point(properties, value):
    assert convert(event(properties)).get("value") == value


@pytest.mark.parametrize(
    ("given", "code"),
    [("eur", "EUR"), (" gbp ", "GBP"), ("euro", "USD"), (None, "USD"), (7, "USD")],
)
def test_currency_upper_case_iso_else_usd(given, code):
    assert convert(event({"currency": given}))["price_currency"] == code


def test_contents_and_number_items_from_products():
    products = [
        {"product_id": 123, "name": "Mug", "price": 9, "quantity": 2, "category": "Kitchen"},
        {"sku": "SKU-2", "price": "3.5", "quantity": "1"},
        {"id": "p3", "quantity": 0},
        "junk",
        {},
    ]
    conversion = convert(event({"products": products}))
    assert conversion["contents"] == [
        {
            "content_id": "123",
            "content_name": "Mug",
            "content_price": "9.00",
            "num_items": 2,
            "content_type": "Kitchen",
        },
        {"content_id": "SKU-2", "content_price": "3.50", "num_items": 1},
        {"content_id": "p3"},
    ]
    assert conversion["number_items"] == 3


@pytest.mark.parametrize(
    ("properties", "number"),
    [
        ({"quantity": 4}, 4),
        ({"quantity": "2"}, 2),
        ({"quantity": 0}, None),
        ({"quantity": 1.5}, None),
    ],
)
def test_number_items_falls_back_to_quantity(properties, number):
    assert convert(event(properties)).get("number_items") == number


@pytest.mark.parametrize(
    ("properties", "conversion_id"),
    [
        ({"conversion_id": "c-1", "order_id": "o-1"}, "c-1"),
        ({"order_id": 5001}, "5001"),
        ({}, "msg-1"),
    ],
)
def test_conversion_id_then_order_id_then_message_id(properties, conversion_id):
    assert convert(event(properties))["conversion_id"] == conversion_id


def test_description_is_the_mappings_else_the_event_name():
    described = Rule(
        pixel_key=1, pixel_id="o8z6j", x_event_id="o87ne", description="Purchase (web)"
    )
    assert convert(event(), described)["description"] == "Purchase (web)"
    assert convert(event())["description"] == "Order Completed"


def test_field_overrides_take_dotted_paths_into_the_message():
    rule = Rule(
        pixel_key=1,
        pixel_id="o8z6j",
        x_event_id="o87ne",
        fields={
            "value": "properties.order.grand_total",
            "currency": "properties.order.ccy",
            "conversion_id": "properties.order.ref",
            "description": "context.page.title",
            "number_items": "properties.order.count",
            "contents": "properties.order.lines",
        },
    )
    ev = event(
        {
            "revenue": 1,
            "order": {
                "grand_total": "99.5",
                "ccy": "chf",
                "ref": "R-7",
                "count": 3,
                "lines": [{"sku": "A", "price": 33}],
            },
        },
        context={"page": {"title": "Checkout"}},
    )
    conversion = convert(ev, rule)
    assert conversion["value"] == "99.50"
    assert conversion["price_currency"] == "CHF"
    assert conversion["conversion_id"] == "R-7"
    assert conversion["description"] == "Checkout"
    assert conversion["number_items"] == 3
    assert conversion["contents"] == [{"content_id": "A", "content_price": "33.00"}]


def test_override_to_a_missing_path_leaves_the_field_out():
    rule = Rule(
        pixel_key=1, pixel_id="o8z6j", x_event_id="o87ne", fields={"value": "properties.nope"}
    )
    assert "value" not in convert(event({"revenue": 10}), rule)


def test_resolve_walks_lists_and_stops_at_scalars():
    message = {"properties": {"products": [{"id": "x"}]}}
    assert mapping.resolve(message, "properties.products.0.id") == "x"
    assert mapping.resolve(message, "properties.products.5.id") is None
    assert mapping.resolve(message, "properties.products.id") is None


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-11-25T12:03:00.5Z", "2026-11-25T12:03:00.500Z"),  # 3 min ahead: clock skew, kept
        ("2026-11-25T13:00:00.000Z", "2026-11-25T12:00:00.000Z"),  # an hour ahead: receive time
        ("2026-11-20T08:00:00+02:00", "2026-11-20T06:00:00.000Z"),
        (None, "2026-11-25T12:00:00.000Z"),
    ],
)
def test_conversion_time_is_utc_with_milliseconds_and_z(timestamp, expected):
    assert convert(event(timestamp=timestamp))["conversion_time"] == expected


def test_identifiers_each_their_own_object_with_ip_and_agent_together():
    ids = {
        "twclid": "tw1",
        "hashed_email": HASHED,
        "hashed_phone_number": "f" * 64,
        "ip_address": "203.0.113.9",
        "user_agent": "UA/1",
    }
    assert convert(event(identifiers=ids))["identifiers"] == [
        {"twclid": "tw1"},
        {"hashed_email": HASHED},
        {"hashed_phone_number": "f" * 64},
        {"ip_address": "203.0.113.9", "user_agent": "UA/1"},
    ]


@pytest.mark.parametrize(
    "ids", [{}, {"ip_address": "203.0.113.9"}, {"ip_address": "203.0.113.9", "user_agent": "UA"}]
)
def test_without_a_usable_identifier_the_conversion_waits_for_one(ids):
    result = mapping.conversions_for(event(identifiers=ids), [RULE])
    assert result.reason == "no_identifier"
    [(rule, conversion)] = result.conversions
    assert rule == RULE and conversion["identifiers"] == []  # device ids alone never count
    assert mapping.outcome(event(identifiers=ids), False, [RULE])[:2] == (
        "waiting",
        "no_identifier",
    )


def test_one_conversion_per_mapping_each_tagged_with_its_pixel():
    other = Rule(pixel_key=2, pixel_id="abc12", x_event_id="tw-abc12-xyz9")
    result = mapping.conversions_for(event(), [RULE, other])
    assert [(rule.pixel_id, c["event_id"]) for rule, c in result.conversions] == [
        ("o8z6j", "o87ne"),
        ("abc12", "tw-abc12-xyz9"),
    ]
    assert mapping.conversions_for(event(), []).reason == "unmapped"


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("properties.total", True),
        ("properties.products.0.id", True),
        ("", False),
        ("a..b", False),
        (".a", False),
        (3, False),
    ],
)
def test_valid_path(path, ok):
    assert mapping.valid_path(path) is ok
