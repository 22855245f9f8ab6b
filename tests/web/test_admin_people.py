"""Admin pages for users, API tokens and the audit log; the last-admin rule
in the service layer, for the admin and the management API alike."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from tests.support import factories
from xtag.extensions import db
from xtag.models import ApiToken, AuditEntry, User
from xtag.services import changes, tokens
from xtag.services.resources import USERS

PASSWORD = "correct horse"


def login(client, email="admin@example.com", role="admin", password=PASSWORD):
    if db.session.scalar(select(User).where(User.email == email)) is None:
        factories.user(email, role=role, password=password)
    r = client.post("/login", data={"email": email, "password": password})
    assert r.status_code == 302, r.get_data(as_text=True)
    return db.session.scalar(select(User).where(User.email == email))


def csrf(client, path):
    return re.search(
        r'name="csrf_token"[^>]*value="([^"]+)"', client.get(path).get_data(as_text=True)
    ).group(1)


def field_errors(html: str) -> list[str]:
    return re.findall(r'<p class="field-error">([^<]*)</p>', html)


def shown_token(html: str) -> str:
    return re.search(r'<code class="secret">(xtag_[^<]+)</code>', html).group(1)


def api_token(user: User) -> dict:
    _, token = tokens.issue(None, user)
    return {"Authorization": f"Bearer {token}"}


def routes(user_id: int, token_id: int) -> list[tuple[str, str]]:
    return [
        ("get", "/users"),
        ("post", "/users"),
        ("get", f"/users/{user_id}"),
        ("post", f"/users/{user_id}"),
        ("post", f"/users/{user_id}/deactivate"),
        ("post", f"/users/{user_id}/reactivate"),
        ("get", "/tokens"),
        ("post", "/tokens"),
        ("post", f"/tokens/{token_id}/revoke"),
        ("get", "/audit"),
    ]


# --- access ---------------------------------------------------------------------------------


def test_every_people_page_is_for_admins_only(client, ctx):
    admin = factories.user("admin@example.com", role="admin")
    token, _ = tokens.issue(None, admin)
    for method, path in routes(admin.id, token.id):
        r = getattr(client, method)(path, data={"role": "marketer", "email": "x@example.com"})
        assert r.status_code == 302 and "/login" in r.headers["Location"], (method, path)
    login(client, "marketer@example.com", role="marketer")
    nav = client.get("/").get_data(as_text=True)
    assert 'href="/users"' not in nav and 'href="/audit"' not in nav
    for method, path in routes(admin.id, token.id):
        r = getattr(client, method)(path, data={"role": "marketer", "r-role": "marketer"})
        assert r.status_code == 403, (method, path)
    db.session.expire_all()
    assert admin.role == "admin" and admin.active and token.revoked_at is None
    assert db.session.scalar(select(User).where(User.email == "x@example.com")) is None


def test_admins_see_the_nav_links_and_every_page_renders_with_strict_headers(client, ctx):
    admin = login(client)
    nav = client.get("/").get_data(as_text=True)
    for link in ('href="/users"', 'href="/tokens"', 'href="/audit"'):
        assert link in nav
    for path in ("/users", f"/users/{admin.id}", "/tokens", "/audit"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    huge = 10**20
    assert client.get("/users/999999").status_code == 404
    assert client.get(f"/users/{huge}").status_code == 404
    assert client.post(f"/tokens/{huge}/revoke").status_code == 404
    assert client.get(f"/tokens?user_id={huge}").status_code == 400  # no row can have it
    assert client.get(f"/audit?actor={huge}&page={huge}&kind=x").status_code == 400


def test_every_form_refuses_a_post_without_the_csrf_token(app, client, ctx):
    admin = login(client)
    marketer = factories.user("m@example.com")
    token, _ = tokens.issue(None, marketer)
    app.config["WTF_CSRF_ENABLED"] = True
    posts = [
        (
            "/users",
            {"email": "new@example.com", "role": "marketer", "password": "long enough, yes"},
        ),
        (f"/users/{marketer.id}", {"action": "role", "r-role": "admin"}),
        (f"/users/{marketer.id}/deactivate", {}),
        ("/tokens", {"user_id": str(admin.id), "name": "ci"}),
        (f"/tokens/{token.id}/revoke", {}),
    ]
    for path, data in posts:
        assert client.post(path, data=data).status_code == 400, path
    db.session.expire_all()
    assert marketer.role == "marketer" and marketer.active and token.revoked_at is None
    assert db.session.scalar(select(ApiToken).where(ApiToken.user_id == admin.id)) is None
    for path, data in posts:
        data = {**data, "csrf_token": csrf(client, "/users")}
        assert client.post(path, data=data).status_code in (200, 302), path
    db.session.expire_all()
    assert marketer.role == "admin" and not marketer.active and token.revoked_at is not None
    assert db.session.scalar(select(User).where(User.email == "new@example.com"))


# --- users ----------------------------------------------------------------------------------


def test_users_list_and_empty_fields_of_a_new_user(client, ctx):
    login(client)
    r = client.post(
        "/users", data={"email": "Ann@Example.com", "role": "marketer", "password": "ann's secret"}
    )
    assert r.status_code == 302
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Added ann@example.com as marketer." in page
    row = re.search(r"ann@example\.com</a>.*?</tr>", page, re.S).group(0)
    assert "marketer" in row and "active" in row and "never" in row
    assert "ann&#39;s secret" not in page and "ann's secret" not in page
    admin_row = re.search(r"admin@example\.com</a>.*?</tr>", page, re.S).group(0)
    assert "(you)" in admin_row and " UTC" in admin_row  # last login time
    client.post("/logout")
    login(client, "ann@example.com", password="ann's secret")


def test_a_generated_password_is_shown_once_and_works(client, ctx):
    login(client)
    r = client.post("/users", data={"email": "bob@example.com", "role": "admin", "password": ""})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    html = r.get_data(as_text=True)
    password = re.search(r'<code class="secret">([^<]+)</code>', html).group(1)
    assert "Added bob@example.com as admin" in html and len(password) >= 16
    assert 'value="bob@example.com"' not in html  # the form is empty again
    assert password not in client.get("/users").get_data(as_text=True)
    entry = db.session.scalar(select(AuditEntry).order_by(AuditEntry.id.desc()))
    assert entry.changes["password_hash"] == "changed" and password not in repr(entry.changes)
    client.post("/logout")
    assert login(client, "bob@example.com", password=password).is_admin


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        ({"email": "not-an-email", "role": "marketer"}, "email", "must be an email address"),
        ({"email": "admin@example.com", "role": "marketer"}, "email", "exists"),
        ({"email": "c@example.com", "role": "marketer", "password": "short"}, "password", "12"),
        ({"email": "c@example.com", "role": "owner"}, "role", "Not a valid choice"),
    ],
)
def test_user_form_errors_sit_next_to_the_field(client, ctx, data, field, says):
    login(client)
    html = client.post("/users", data=data).get_data(as_text=True)
    errors = field_errors(html)
    assert len(errors) == 1 and says in errors[0]
    assert html.index(f'name="{field}"') < html.index(errors[0])  # right under its field
    assert db.session.scalar(select(User).where(User.email == "c@example.com")) is None


def test_change_role_deactivate_and_reactivate(app, client):
    """Without the shared `ctx` fixture: each client's requests get their own
    app context, so two people are logged in at once as in real life."""

    def carol_row():
        return db.session.scalar(select(User).where(User.email == "carol@example.com"))

    with app.app_context():
        login(client)
        carol_id = factories.user("carol@example.com", password=PASSWORD).id
    other = app.test_client()
    assert other.post("/login", data={"email": "carol@example.com", "password": PASSWORD})
    assert other.get("/").status_code == 200
    r = client.post(f"/users/{carol_id}", data={"action": "role", "r-role": "admin"})
    assert r.status_code == 302
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "carol@example.com is now admin." in page
    r = client.post(f"/users/{carol_id}/deactivate")
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "carol@example.com is deactivated." in page and "Reactivate carol@example.com" in page
    with app.app_context():
        assert (carol_row().role, carol_row().active) == ("admin", False)
    assert other.get("/").status_code == 302  # her open session ends with it
    refused = app.test_client().post(
        "/login", data={"email": "carol@example.com", "password": PASSWORD}
    )
    assert refused.status_code == 200
    assert "Wrong email or password." in refused.get_data(as_text=True)
    client.post(f"/users/{carol_id}/reactivate")
    with app.app_context():
        assert carol_row().active
    r = app.test_client().post("/login", data={"email": "carol@example.com", "password": PASSWORD})
    assert r.status_code == 302


def test_set_a_new_password_given_or_generated(client, ctx):
    login(client)
    dave = factories.user("dave@example.com")
    short = client.post(f"/users/{dave.id}", data={"action": "password", "p-password": "short"})
    assert "at least 12 characters" in field_errors(short.get_data(as_text=True))[0]
    r = client.post(f"/users/{dave.id}", data={"action": "password", "p-password": ""})
    assert r.headers["Cache-Control"] == "no-store"
    password = re.search(r'<code class="secret">([^<]+)</code>', r.get_data(as_text=True)).group(1)
    client.post("/logout")
    login(client, "dave@example.com", password=password)


def test_the_last_active_admin_cannot_be_demoted_or_deactivated_in_the_admin(client, ctx):
    admin = login(client)
    html = client.post(
        f"/users/{admin.id}", data={"action": "role", "r-role": "marketer"}
    ).get_data(as_text=True)
    assert field_errors(html) == [
        "admin@example.com is the last active admin: make another user an admin first"
    ]
    r = client.post(f"/users/{admin.id}/deactivate")
    assert "is the last active admin" in client.get(r.headers["Location"]).get_data(as_text=True)
    db.session.expire_all()
    assert (admin.role, admin.active) == ("admin", True)
    inactive = factories.user("old@example.com", role="admin")
    inactive.active = False
    db.session.commit()
    client.post(f"/users/{admin.id}", data={"action": "role", "r-role": "marketer"})
    db.session.expire_all()
    assert admin.role == "admin"  # an inactive admin does not count
    factories.user("second@example.com", role="admin")
    r = client.post(f"/users/{admin.id}", data={"action": "role", "r-role": "marketer"})
    assert r.status_code == 302
    db.session.expire_all()
    assert admin.role == "marketer"
    assert client.get("/users").status_code == 403  # no longer an admin


# --- the last-admin rule through the management API ------------------------------------------


def test_the_api_refuses_to_demote_deactivate_or_delete_the_last_admin(client, ctx):
    admin = factories.user("admin@example.com", role="admin")
    headers = api_token(admin)
    before = db.session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()))
    for body, field in (({"role": "marketer"}, "role"), ({"active": False}, "active")):
        r = client.patch(f"/api/v1/users/{admin.id}", json=body, headers=headers)
        assert r.status_code == 400, r.json
        assert r.json["error"] == {
            "code": "invalid",
            "field": field,
            "message": "admin@example.com is the last active admin: "
            "make another user an admin first",
        }
    r = client.delete(f"/api/v1/users/{admin.id}", headers=headers)
    assert r.status_code == 400 and "last active admin" in r.json["error"]["message"]
    db.session.expire_all()
    assert (admin.role, admin.active) == ("admin", True)
    assert db.session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc())) == before
    # a harmless change to the last admin still goes through
    assert client.patch(
        f"/api/v1/users/{admin.id}", json={"role": "admin", "active": True}, headers=headers
    ).json == USERS.dump(admin)


def test_the_api_allows_it_once_another_active_admin_exists(client, ctx):
    admin = factories.user("admin@example.com", role="admin")
    headers = api_token(admin)
    second = client.post(
        "/api/v1/users",
        json={"email": "second@example.com", "role": "admin", "password": "long enough, yes"},
        headers=headers,
    ).json
    r = client.patch(f"/api/v1/users/{second['id']}", json={"active": False}, headers=headers)
    assert r.status_code == 200 and r.json["active"] is False
    r = client.patch(f"/api/v1/users/{admin.id}", json={"role": "marketer"}, headers=headers)
    assert r.status_code == 400  # the second admin is inactive now
    client.patch(f"/api/v1/users/{second['id']}", json={"active": True}, headers=headers)
    second_headers = api_token(db.session.get(User, second["id"]))
    assert client.delete(f"/api/v1/users/{admin.id}", headers=second_headers).status_code == 204
    r = client.patch(
        f"/api/v1/users/{second['id']}", json={"role": "marketer"}, headers=second_headers
    )
    assert r.status_code == 400 and r.json["error"]["field"] == "role"


def test_marketers_can_be_deactivated_and_deleted_freely(client, ctx):
    headers = api_token(factories.user("admin@example.com", role="admin"))
    marketer = factories.user("m@example.com")
    r = client.patch(f"/api/v1/users/{marketer.id}", json={"active": False}, headers=headers)
    assert r.status_code == 200
    assert client.delete(f"/api/v1/users/{marketer.id}", headers=headers).status_code == 204


# --- API tokens -----------------------------------------------------------------------------


def test_a_token_is_shown_once_works_and_stops_working_when_revoked(client, ctx):
    admin = login(client)
    marketer = factories.user("m@example.com")
    assert "No API tokens yet" in client.get("/tokens").get_data(as_text=True)
    r = client.post("/tokens", data={"user_id": str(marketer.id), "name": "deploy script"})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    html = r.get_data(as_text=True)
    token = shown_token(html)
    assert "New token for m@example.com (deploy script)" in html
    row = db.session.scalar(select(ApiToken))
    assert row.token_hash != token and token not in repr(
        db.session.execute(select(ApiToken.__table__)).all()
    )
    listing = client.get("/tokens").get_data(as_text=True)
    assert token not in listing and row.prefix in listing and "deploy script" in listing
    assert "never" in listing and "live" in listing
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/sites", headers=headers).status_code == 200
    assert client.get("/api/v1/users", headers=headers).status_code == 403  # the owner's role
    listing = client.get("/tokens").get_data(as_text=True)
    assert "never" not in listing.split("deploy script")[1].split("</tr>")[0]  # last used
    r = client.post(f"/tokens/{row.id}/revoke", data={"next": f"/tokens?user_id={marketer.id}"})
    assert r.status_code == 302 and r.headers["Location"] == f"/tokens?user_id={marketer.id}"
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "is revoked; it no longer works" in page and "revoked 20" in page
    assert client.get("/api/v1/sites", headers=headers).status_code == 401
    r = client.post(f"/tokens/{row.id}/revoke", data={"next": "//evil.example/"})
    assert r.headers["Location"] == "/tokens"
    assert "was revoked already" in client.get("/tokens").get_data(as_text=True)
    entries = db.session.scalars(
        select(AuditEntry).where(AuditEntry.object_type == "api_token").order_by(AuditEntry.id)
    ).all()
    assert [(e.action, e.user_id) for e in entries] == [
        ("create", admin.id),
        ("revoke", admin.id),
    ]
    assert token not in repr([e.changes for e in entries])


def test_tokens_per_user_and_form_errors(client, ctx):
    admin = login(client)
    marketer = factories.user("m@example.com")
    tokens.issue(None, marketer, "ci")
    page = client.get(f"/tokens?user_id={admin.id}").get_data(as_text=True)
    assert "API tokens of admin@example.com" in page and "No API tokens yet for admin" in page
    page = client.get(f"/tokens?user_id={marketer.id}").get_data(as_text=True)
    assert f'<option selected value="{marketer.id}">' in page and ">ci<" in page
    html = client.post("/tokens", data={"user_id": str(admin.id), "name": "x" * 101}).get_data(
        as_text=True
    )
    assert field_errors(html) and html.index('name="name"') < html.index(field_errors(html)[0])
    marketer.active = False
    db.session.commit()
    html = client.post("/tokens", data={"user_id": str(marketer.id)}).get_data(as_text=True)
    assert field_errors(html) == ["Not a valid choice."]
    assert db.session.scalar(select(ApiToken).where(ApiToken.user_id == admin.id)) is None


def test_the_service_refuses_tokens_for_deactivated_users(ctx):
    from xtag.core.errors import Invalid

    user = factories.user("m@example.com")
    user.active = False
    db.session.commit()
    with pytest.raises(Invalid, match="deactivated"):
        tokens.issue(None, user)


# --- audit log ------------------------------------------------------------------------------


def test_the_audit_log_shows_changes_made_in_the_admin(client, ctx):
    admin = login(client)
    assert "Nothing changed yet" in client.get("/audit").get_data(as_text=True)
    client.post(
        "/users",
        data={
            "email": "eve@example.com",
            "role": "marketer",
            "password": "purple monkey dishwasher",
        },
    )
    eve = db.session.scalar(select(User).where(User.email == "eve@example.com"))
    client.post(f"/users/{eve.id}", data={"action": "role", "r-role": "admin"})
    client.post("/tokens", data={"user_id": str(eve.id), "name": "ci"})
    changes.audit(None, "create", "site", 7, {"name": {"from": None, "to": "Shop"}})
    db.session.commit()
    page = client.get("/audit").get_data(as_text=True)
    rows = re.findall(r"<tr>\s*<td>20.*?</tr>", page, re.S)
    assert len(rows) == 4 and "4 entries, newest first" in page
    assert "command line" in rows[0] and "site 7" in rows[0] and "Shop" in rows[0]
    assert (
        "admin@example.com" in rows[1] and "api_token" in rows[1] and "eve@example.com" in rows[1]
    )
    assert "update" in rows[2] and f'href="/users/{eve.id}">user {eve.id}' in rows[2]
    assert "marketer → admin" in rows[2]
    assert "create" in rows[3] and "eve@example.com" in rows[3] and "changed" in rows[3]
    assert "purple monkeys" not in page
    only_tokens = client.get("/audit?kind=api_token").get_data(as_text=True)
    assert len(re.findall(r"<tr>\s*<td>20", only_tokens)) == 1
    by_admin = client.get(f"/audit?actor={admin.id}").get_data(as_text=True)
    assert "3 entries" in by_admin and "site 7" not in by_admin
    by_cli = client.get("/audit?actor=system").get_data(as_text=True)
    assert "1 entry" in by_cli and "site 7" in by_cli
    nothing = client.get("/audit?kind=connection").get_data(as_text=True)
    assert "No entries match these filters" in nothing


def test_the_audit_log_pages_by_50_newest_first(client, ctx):
    login(client)
    for number in range(60):
        changes.audit(None, "update", "site", number, {"name": {"from": "a", "to": f"n{number}"}})
    db.session.commit()
    first = client.get("/audit").get_data(as_text=True)
    assert len(re.findall(r"<tr>\s*<td>20", first)) == 50
    assert "site 59<" in first and "site 10<" in first and "site 9<" not in first
    assert "page 1 of 2" in first
    assert 'href="/audit?page=2">Older' in first and "Newer" not in first
    second = client.get("/audit?page=2").get_data(as_text=True)
    assert len(re.findall(r"<tr>\s*<td>20", second)) == 10 and "site 9<" in second
    assert "Newer" in second and "Older" not in second
    assert "No entries match" in client.get("/audit?page=9").get_data(as_text=True)
    assert client.get("/audit?page=nope").status_code == 200


@pytest.mark.parametrize("password", ["short", "password1234", "aaaaaaaaaaaaaaaa"])
def test_weak_new_passwords_are_refused_but_old_ones_still_work(client, ctx, password):
    login(client)
    r = client.post(
        "/users", data={"email": "weak@example.com", "role": "marketer", "password": password}
    )
    assert "weak@example.com" not in [u.email for u in db.session.scalars(select(User))]
    assert "12 characters" in r.get_data(as_text=True) or "most common" in r.get_data(as_text=True)
    old = factories.user("old@example.com", password="only8chr")  # set before the rule
    fresh = client.application.test_client()
    r = fresh.post("/login", data={"email": old.email, "password": "only8chr"})
    assert r.status_code == 302


def test_logout_a_new_password_and_deactivation_end_every_session(app):
    """Each request in its own app context, as in production (no test ctx)."""
    with app.app_context():
        factories.user("boss@example.com", role="admin", password=PASSWORD)
        user_id = factories.user("m@example.com", password=PASSWORD).id
    admin, *browsers = [app.test_client() for _ in range(4)]
    admin.post("/login", data={"email": "boss@example.com", "password": PASSWORD})

    def log_in(browser, password=PASSWORD) -> None:
        r = browser.post("/login", data={"email": "m@example.com", "password": password})
        assert r.status_code == 302 and browser.get("/sites").status_code == 200

    for browser in browsers:
        log_in(browser)
    browsers[0].post("/logout")  # ends the other browsers' sessions too
    assert [b.get("/sites").status_code for b in browsers] == [302, 302, 302]
    log_in(browsers[1])
    new = "a new passphrase here"
    admin.post(f"/users/{user_id}", data={"action": "password", "p-password": new})
    assert browsers[1].get("/sites").status_code == 302
    log_in(browsers[2], new)
    admin.post(f"/users/{user_id}", data={"action": "role", "r-role": "admin"})
    assert browsers[2].get("/sites").status_code == 302
    log_in(browsers[2], new)
    admin.post(f"/users/{user_id}/deactivate")
    assert browsers[2].get("/sites").status_code == 302
    assert admin.get("/users").status_code == 200  # the admin's own session lives on
