"""The site options of issue #14 through the API: test_mode, x_pixel_id and
silence_alert_hours, checked as every other field is."""

from __future__ import annotations

import pytest

from tests.support.web import token_for


@pytest.fixture
def marketer(ctx):
    return token_for("marketer")


def test_a_site_has_the_options_off_until_set(client, marketer):
    r = client.post("/api/v1/sites", json={"name": "Shop"}, headers=marketer)
    assert r.status_code == 201
    site = r.json
    assert (site["test_mode"], site["x_pixel_id"], site["silence_alert_hours"]) == (
        False,
        None,
        None,
    )
    changed = {"test_mode": True, "x_pixel_id": " O8Z6J ", "silence_alert_hours": 1.5}
    r = client.patch(f"/api/v1/sites/{site['id']}", json=changed, headers=marketer)
    assert r.status_code == 200
    assert (r.json["test_mode"], r.json["x_pixel_id"], r.json["silence_alert_hours"]) == (
        True,
        "o8z6j",
        1.5,
    )
    off = {"x_pixel_id": None, "silence_alert_hours": None, "test_mode": False}
    r = client.patch(f"/api/v1/sites/{site['id']}", json=off, headers=marketer)
    assert {k: r.json[k] for k in off} == off


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("test_mode", "yes"),
        ("x_pixel_id", "tw-o8z6j"),
        ("x_pixel_id", 123),
        ("silence_alert_hours", 0),
        ("silence_alert_hours", -1),
        ("silence_alert_hours", 10**9),
        ("silence_alert_hours", "6"),
        ("silence_alert_hours", True),
    ],
)
def test_a_bad_option_is_a_400_naming_it(client, marketer, field, value):
    r = client.post("/api/v1/sites", json={"name": "Shop", field: value}, headers=marketer)
    assert r.status_code == 400 and r.json["error"]["field"] == field


def test_the_openapi_document_describes_the_options(client):
    site = client.get("/api/v1/openapi.json").json["components"]["schemas"]["Site"]
    assert {"test_mode", "x_pixel_id", "silence_alert_hours"} <= set(site["properties"])
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert {
        "/api/v1/replays",
        "/api/v1/replays/{row_id}",
        "/api/v1/pixels/{row_id}/quality",
    } <= set(paths)
