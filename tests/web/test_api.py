"""The management API: every route and role, validation, masking, audit, preview."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests.support import pii
from tests.support.sending import basic, order
from tests.support.web import token_for
from xtag.extensions import db
from xtag.models import ApiToken, AuditEntry, Delivery

OAUTH1 = {
    "consumer_key": "ck-public-1",
    "consumer_secret": pii.SECRETS[1],
    "access_token": "123-at",
    "access_token_secret": pii.SECRETS[2],
}


@pytest.fixture
def admin(ctx):
    return token_for("admin")


@pytest.fixture
def marketer(ctx):
    return token_for("marketer")


def make(client, headers, path, body, status=201):
    r = client.post(f"/api/v1/{path}", json=body, headers=headers)
    assert r.status_code == status, r.json
    return r.json


def setup_config(client, admin, token="pt-test"):
    connection = make(
        client,
        admin,
        "connections",
        {"name": "X", "auth_type": "pixel_token", "credentials": {"token": token}},
    )
    site = make(client, admin, "sites", {"name": "Shop", "default_phone_region": "us"})
    pixel = make(
        client,
        admin,
        "pixels",
        {"pixel_id": "O8Z6J", "name": "Main", "connection_id": connection["id"]},
    )
    mapping = make(
        client,
        admin,
        "mappings",
        {
            "site_id": site["id"],
            "event_name": "Order Completed",
            "pixel": pixel["id"],
            "x_event_id": "o87ne",
        },
    )
    return connection, site, pixel, mapping


# --- authentication and roles ------------------------------------------------------


def test_requests_without_a_valid_token_get_401(client, ctx):
    assert client.get("/api/v1/sites").status_code == 401
    r = client.get("/api/v1/sites", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"
    assert client.get("/api/v1/sites", headers={"Authorization": "Basic abc"}).status_code == 401


def test_revoked_token_and_inactive_user_are_refused_and_last_use_is_kept(client, ctx):
    headers = token_for("admin")
    assert client.get("/api/v1/sites", headers=headers).status_code == 200
    row = db.session.scalar(select(ApiToken))
    assert row.last_used_at is not None
    row.user.active = False
    db.session.commit()
    assert client.get("/api/v1/sites", headers=headers).status_code == 401
    row.user.active, row.revoked_at = True, row.created_at
    db.session.commit()
    assert client.get("/api/v1/sites", headers=headers).status_code == 401


ADMIN_ONLY = [
    (
        "post",
        "/api/v1/connections",
        {"name": "X", "auth_type": "pixel_token", "credentials": {"token": "t"}},
    ),
    ("patch", "/api/v1/connections/1", {"name": "Y"}),
    ("delete", "/api/v1/connections/1", None),
    ("post", "/api/v1/deliveries/1/retry", None),
    ("post", "/api/v1/deliveries/retry", None),
    ("get", "/api/v1/audit", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY)
def test_marketers_may_not_do_admin_things(client, marketer, method, path, body):
    r = getattr(client, method)(path, json=body, headers=marketer)
    assert r.status_code == 403 and r.json["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/sites",
        "/api/v1/connections",
        "/api/v1/pixels",
        "/api/v1/mappings",
        "/api/v1/deliveries",
        "/api/v1/events",
    ],
)
def test_marketers_may_read(client, marketer, path):
    r = client.get(path, headers=marketer)
    assert r.status_code == 200 and r.json["items"] == [] and r.json["total"] == 0


def test_marketers_manage_sites_pixels_and_mappings(client, admin, marketer):
    connection = make(
        client,
        admin,
        "connections",
        {"name": "X", "auth_type": "pixel_token", "credentials": {"token": "tok-123456789"}},
    )
    site = make(client, marketer, "sites", {"name": "Shop"})
    pixel = make(
        client, marketer, "pixels", {"pixel_id": "abc12", "connection_id": connection["id"]}
    )
    mapping = make(
        client,
        marketer,
        "mappings",
        {"site_id": site["id"], "event_name": "Signup", "pixel": pixel["id"], "x_event_id": "xyz9"},
    )
    r = client.patch(f"/api/v1/mappings/{mapping['id']}", json={"enabled": False}, headers=marketer)
    assert r.status_code == 200 and r.json["enabled"] is False
    assert client.delete(f"/api/v1/mappings/{mapping['id']}", headers=marketer).status_code == 204
    assert client.get(f"/api/v1/mappings/{mapping['id']}", headers=marketer).status_code == 404


# --- CRUD and validation -----------------------------------------------------------------


def test_site_crud_with_write_key_read_only(client, admin):
    site = make(
        client,
        admin,
        "sites",
        {"name": "Shop", "allowed_origins": ["HTTPS://Shop.Example/", "http://localhost:8000"]},
    )
    assert site["allowed_origins"] == ["http://localhost:8000", "https://shop.example"]
    assert len(site["write_key"]) >= 24 and site["require_consent"] is False
    r = client.patch(f"/api/v1/sites/{site['id']}", json={"write_key": "mine"}, headers=admin)
    assert r.status_code == 400 and r.json["error"] == {
        "code": "invalid",
        "message": "write_key is read-only",
        "field": "write_key",
    }
    r = client.patch(
        f"/api/v1/sites/{site['id']}",
        json={"require_consent": True, "default_phone_region": "gb"},
        headers=admin,
    )
    assert (r.json["require_consent"], r.json["default_phone_region"]) == (True, "GB")
    assert client.get("/api/v1/sites?name=Shop", headers=admin).json["total"] == 1
    assert client.delete(f"/api/v1/sites/{site['id']}", headers=admin).status_code == 204


@pytest.mark.parametrize(
    ("path", "body", "field", "says"),
    [
        ("sites", {}, "name", "name is required"),
        ("sites", {"name": ""}, "name", "may not be empty"),
        ("sites", {"name": 5}, "name", "must be of type string"),
        ("sites", {"name": "S", "bogus": 1}, "bogus", "unknown field bogus"),
        ("sites", {"name": "S\u0000"}, "name", "NUL"),
        (
            "sites",
            {"name": "S", "allowed_origins": ["shop.example"]},
            "allowed_origins",
            "not an origin",
        ),
        (
            "sites",
            {"name": "S", "allowed_origins": ["https://shop.example/path"]},
            "allowed_origins",
            "scheme and host",
        ),
        ("sites", {"name": "S", "allowed_origins": [3]}, "allowed_origins", "list of strings"),
        ("sites", {"name": "S", "default_phone_region": "XX"}, "default_phone_region", "ISO 3166"),
        ("pixels", {"pixel_id": "not base36!"}, "pixel_id", "base-36"),
        ("pixels", {"pixel_id": "abc", "connection_id": 999}, "connection_id", "no connection"),
        (
            "connections",
            {"name": "X", "auth_type": "magic", "credentials": {}},
            "auth_type",
            "one of",
        ),
        (
            "connections",
            {"name": "X", "auth_type": "oauth1", "credentials": {"consumer_key": "a"}},
            "credentials",
            "need consumer_secret",
        ),
        (
            "connections",
            {"name": "X", "auth_type": "pixel_token", "credentials": {"token": "t", "x": "y"}},
            "credentials",
            "unknown credential",
        ),
        ("mappings", {"site_id": 1}, "event_name", "event_name is required"),
    ],
)
def test_invalid_fields_get_400_naming_the_field(client, admin, path, body, field, says):
    r = client.post(f"/api/v1/{path}", json=body, headers=admin)
    assert r.status_code in (400, 422), r.json
    assert r.json["error"]["field"] == field and says in r.json["error"]["message"]


def test_mapping_event_ids_and_overrides_are_checked(client, admin):
    _, site, pixel, mapping = setup_config(client, admin)
    base = {"site_id": site["id"], "event_name": "Signup", "pixel": pixel["id"]}
    ok = make(client, admin, "mappings", {**base, "x_event_id": "tw-o8z6j-abc1"})
    assert ok["x_event_id"] == "tw-o8z6j-abc1"
    for x_event_id, says in (("tw-zzzz-abc1", "belongs to pixel zzzz"), ("o87ne!", "base-36")):
        r = client.post("/api/v1/mappings", json={**base, "x_event_id": x_event_id}, headers=admin)
        assert r.status_code == 400 and says in r.json["error"]["message"]
    r = client.patch(
        f"/api/v1/mappings/{mapping['id']}",
        json={"fields": {"value": "properties..x"}},
        headers=admin,
    )
    assert r.status_code == 400 and "dotted path" in r.json["error"]["message"]
    r = client.patch(
        f"/api/v1/mappings/{mapping['id']}",
        json={"fields": {"colour": "properties.c"}},
        headers=admin,
    )
    assert r.status_code == 400 and "cannot be overridden" in r.json["error"]["message"]
    r = client.patch(
        f"/api/v1/mappings/{mapping['id']}",
        json={"fields": {"value": "properties.total"}},
        headers=admin,
    )
    assert r.status_code == 200 and r.json["fields"] == {"value": "properties.total"}
    r = client.post(
        "/api/v1/mappings", json={**base, "pixel": 999, "x_event_id": "a"}, headers=admin
    )
    assert r.status_code == 422 and r.json["error"]["field"] == "pixel"


def test_duplicates_get_409(client, admin):
    _, site, pixel, mapping = setup_config(client, admin)
    r = client.post("/api/v1/pixels", json={"pixel_id": "o8z6j"}, headers=admin)
    assert r.status_code == 409 and r.json["error"]["code"] == "conflict"
    again = {
        "site_id": site["id"],
        "event_name": "Order Completed",
        "pixel": pixel["id"],
        "x_event_id": "o87ne",
    }
    assert client.post("/api/v1/mappings", json=again, headers=admin).status_code == 409


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=x",
        "offset=-1",
        "site_id=abc",
        "site_id=99999999999",
        "event_name=%00",
    ],
)
def test_bad_paging_and_filters_get_400(client, admin, query):
    r = client.get(f"/api/v1/mappings?{query}", headers=admin)
    assert r.status_code == 400 and r.json["error"]["field"] in (
        "limit",
        "offset",
        "site_id",
        "event_name",
    )


def test_non_json_body_and_unknown_ids(client, admin):
    r = client.post("/api/v1/sites", data="name=x", headers=admin)
    assert r.status_code == 400 and "JSON" in r.json["error"]["message"]
    assert client.get("/api/v1/sites/999", headers=admin).status_code == 404
    assert (
        client.patch("/api/v1/pixels/999", json={}, headers=admin).json["error"]["code"]
        == "not_found"
    )
    assert client.get("/api/v1/nothing", headers=admin).status_code == 404


# --- secrets and audit ----------------------------------------------------------------------


def test_credentials_are_write_only_and_masked_everywhere(client, admin):
    created = make(
        client, admin, "connections", {"name": "X", "auth_type": "oauth1", "credentials": OAUTH1}
    )
    shown = created["credentials"]
    assert shown["consumer_key"] == "ck-public-1"
    assert shown["consumer_secret"] == "****" + pii.SECRETS[1][-4:]
    r = client.patch(
        f"/api/v1/connections/{created['id']}",
        json={"credentials": {"access_token_secret": pii.SECRETS[3]}},
        headers=admin,
    )
    assert r.status_code == 200
    responses = [
        created,
        r.json,
        client.get("/api/v1/connections", headers=admin).json,
        client.get(f"/api/v1/connections/{created['id']}", headers=admin).json,
        client.get("/api/v1/audit", headers=admin).json,
    ]
    text = json.dumps(responses)
    assert not any(secret in text for secret in pii.SECRETS)


def test_audit_records_who_what_and_changed_fields(client, admin):
    connection, site, pixel, mapping = setup_config(client, admin)
    client.patch(f"/api/v1/sites/{site['id']}", json={"name": "Shop 2"}, headers=admin)
    client.patch(
        f"/api/v1/connections/{connection['id']}",
        json={"credentials": {"token": pii.SECRETS[0]}},
        headers=admin,
    )
    client.delete(f"/api/v1/mappings/{mapping['id']}", headers=admin)
    entries = client.get("/api/v1/audit", headers=admin).json["items"]
    admin_id = db.session.scalar(select(AuditEntry.user_id))
    summary = [(e["action"], e["object_type"]) for e in reversed(entries)]
    assert summary == [
        ("create", "connection"),
        ("create", "site"),
        ("create", "pixel"),
        ("create", "mapping"),
        ("update", "site"),
        ("update", "connection"),
        ("delete", "mapping"),
    ]
    assert all(e["user_id"] == admin_id for e in entries)
    assert entries[2]["changes"] == {"name": {"from": "Shop", "to": "Shop 2"}}
    assert entries[1]["changes"] == {"credentials": "changed"}


# --- preview equals delivery -------------------------------------------------------------------


def test_preview_is_exactly_what_the_worker_sends(x_app, client, admin, fake_x, deliver):
    _, site, pixel, _ = setup_config(client, admin)
    message = order(7, traits={"email": pii.RAW_EMAIL}, timestamp="2026-11-25T10:00:00.000Z")
    preview = client.post(
        "/api/v1/mappings/preview", json={"site_id": site["id"], "message": message}, headers=admin
    )
    assert preview.status_code == 200, preview.json
    assert preview.json["outcome"] == "forwarded"
    [planned] = preview.json["conversions"]
    assert planned["pixel_id"] == "o8z6j" and fake_x.calls() == []  # preview sends nothing
    write_key = client.get(f"/api/v1/sites/{site['id']}", headers=admin).json["write_key"]
    assert client.post("/v1/track", json=message, headers=basic(write_key)).status_code == 200
    deliver()
    [sent] = fake_x.accepted()
    sent_ids = [i for i in sent["identifiers"] if "ip_address" not in i]
    planned_ids = [i for i in planned["conversion"]["identifiers"] if "ip_address" not in i]
    assert sent_ids == planned_ids
    assert {k: v for k, v in sent.items() if k != "identifiers"} == {
        k: v for k, v in planned["conversion"].items() if k != "identifiers"
    }


def test_preview_explains_drops(client, admin):
    _, site, _, _ = setup_config(client, admin)
    no_id = order(1, context={})
    r = client.post(
        "/api/v1/mappings/preview", json={"site_id": site["id"], "message": no_id}, headers=admin
    )
    assert (r.json["outcome"], r.json["reason"], r.json["conversions"]) == (
        "dropped",
        "no_identifier",
        [],
    )
    other = order(1, event="Nope")
    r = client.post(
        "/api/v1/mappings/preview", json={"site_id": site["id"], "message": other}, headers=admin
    )
    assert r.json["outcome"] == "unmapped"
    r = client.post(
        "/api/v1/mappings/preview",
        json={"site_id": site["id"], "message": {"event": "x"}},
        headers=admin,
    )
    assert r.status_code == 400 and "anonymousId" in r.json["error"]["message"]


# --- deliveries and events ----------------------------------------------------------------------


def test_deliveries_list_detail_and_retry(x_app, client, admin, marketer, fake_x, deliver):
    _, site, _, _ = setup_config(client, admin)
    write_key = client.get(f"/api/v1/sites/{site['id']}", headers=admin).json["write_key"]
    fake_x.fail_next(503, n=3)
    client.post("/v1/track", json=order(1), headers=basic(write_key))
    deliver()
    listed = client.get("/api/v1/deliveries?status=failed&pixel=o8z6j", headers=marketer).json
    assert listed["total"] == 1
    delivery_id = listed["items"][0]["id"]
    detail = client.get(f"/api/v1/deliveries/{delivery_id}", headers=marketer).json
    assert [a["status_code"] for a in detail["attempt_log"]] == [503, 503, 503]
    assert detail["items"][0]["status"] == "failed" and "hashed" not in json.dumps(detail["items"])
    r = client.post(f"/api/v1/deliveries/{delivery_id}/retry", headers=admin)
    assert r.status_code == 200
    deliver()
    assert (
        client.get(f"/api/v1/deliveries/{delivery_id}", headers=admin).json["status"] == "delivered"
    )
    again = client.post(f"/api/v1/deliveries/{delivery_id}/retry", headers=admin)
    assert again.status_code == 409
    assert client.get("/api/v1/deliveries?since=yesterday", headers=admin).status_code == 400
    events = client.get(f"/api/v1/events?site_id={site['id']}", headers=marketer).json["items"]
    assert [(e["event_name"], e["outcome"], e["pixels"]) for e in events] == [
        ("Order Completed", "forwarded", ["o8z6j"])
    ]


def test_bulk_retry_of_failed_deliveries(x_app, client, admin, fake_x, deliver):
    _, site, _, _ = setup_config(client, admin)
    write_key = client.get(f"/api/v1/sites/{site['id']}", headers=admin).json["write_key"]
    fake_x.fail_next(403)
    client.post("/v1/track", json=order(1), headers=basic(write_key))
    deliver()
    r = client.post("/api/v1/deliveries/retry?pixel=o8z6j", headers=admin)
    assert r.status_code == 200 and len(r.json["retried"]) == 1
    deliver()
    assert db.session.scalar(select(Delivery.status)) == "delivered"
    assert len(fake_x.accepted()) == 1


def test_openapi_document_describes_every_route(client, app):
    from openapi_spec_validator import validate

    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on anything that is not valid OpenAPI 3.1
    api_rules = {
        rule.rule.replace("<int:row_id>", "{row_id}")
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/") and rule.rule != "/api/v1/openapi.json"
    }
    assert api_rules <= set(doc["paths"])
    for route in ("/v1/track", "/v1/page", "/v1/identify", "/v1/batch"):
        assert route in doc["paths"]
    assert doc["components"]["schemas"]["SiteInput"]["required"] == ["name"]
    assert "write_key" not in doc["components"]["schemas"]["SiteInput"]["properties"]


def test_admins_manage_users_and_passwords_stay_write_only(client, admin, marketer):
    assert client.get("/api/v1/users", headers=marketer).status_code == 403
    body = {"email": "New@Example.com", "role": "marketer", "password": "a long password"}
    user = make(client, admin, "users", body)
    assert user == {
        "id": user["id"],
        "email": "new@example.com",
        "role": "marketer",
        "active": True,
        "last_login_at": None,
    }
    assert client.post("/api/v1/users", json=body, headers=admin).status_code == 409
    short = client.post(
        "/api/v1/users", json={**body, "email": "b@example.com", "password": "short"}, headers=admin
    )
    assert short.status_code == 400 and short.json["error"]["field"] == "password"
    r = client.patch(
        f"/api/v1/users/{user['id']}", json={"role": "admin", "active": False}, headers=admin
    )
    assert (r.json["role"], r.json["active"]) == ("admin", False)
    client.patch(
        f"/api/v1/users/{user['id']}", json={"password": "another long one"}, headers=admin
    )
    entries = client.get("/api/v1/audit", headers=admin).json["items"]
    assert entries[0]["changes"] == {"password_hash": "changed"}
    assert "long" not in json.dumps(entries)
    assert client.delete(f"/api/v1/users/{user['id']}", headers=admin).status_code == 204


def test_every_api_route_wants_a_token(app, client):
    routes = [
        (rule.rule.replace("<int:row_id>", "1"), method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/") and rule.rule != "/api/v1/openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    ]
    assert len(routes) >= 30
    for path, method in routes:
        r = client.open(path, method=method, json={})
        assert r.status_code == 401, (method, path, r.status_code)


def test_an_oauth2_connection_shows_when_its_token_expires(client, admin):
    credentials = {
        "client_id": "cid",
        "client_secret": pii.SECRETS[1],
        "access_token": pii.SECRETS[2],
        "refresh_token": pii.SECRETS[3],
        "expires_at": 1_900_000_000,
    }
    r = client.post(
        "/api/v1/connections",
        json={"name": "X", "auth_type": "oauth2", "credentials": credentials},
        headers=admin,
    )
    assert r.status_code == 201
    assert r.json["token_expires_at"].startswith("2030-03-17T")
