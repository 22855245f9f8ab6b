"""The admin's front door: login, logout, safe redirects, CSRF."""

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
from sqlalchemy import select

from tests.support import factories
from xtag.extensions import db
from xtag.models import User


@pytest.fixture
def csrf_client(app, client):
    app.config["WTF_CSRF_ENABLED"] = True
    return client


def _csrf(client, path="/login"):
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def test_login_page_is_served(client):
    r = client.get("/login")
    assert r.status_code == 200 and "Log in to xtag" in r.get_data(as_text=True)


def test_dashboard_requires_login(client):
    r = client.get("/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_login_logout_and_safe_next(csrf_client, ctx):
    factories.user("m@example.com", password="correct horse")
    token = _csrf(csrf_client)
    bad = csrf_client.post(
        "/login", data={"email": "m@example.com", "password": "nope", "csrf_token": token}
    )
    assert "Wrong email or password" in bad.get_data(as_text=True)
    r = csrf_client.post(
        "/login?next=//evil.example/x",
        data={"email": "M@example.com", "password": "correct horse", "csrf_token": token},
    )
    assert r.status_code == 302 and r.headers["Location"] == "/"
    assert "m@example.com" in csrf_client.get("/").get_data(as_text=True)
    r = csrf_client.post("/logout", data={"csrf_token": _csrf(csrf_client, "/")})
    assert r.status_code == 302
    assert csrf_client.get("/").status_code == 302


def test_login_without_csrf_token_is_rejected(csrf_client, ctx):
    factories.user("m@example.com", password="correct horse")
    r = csrf_client.post("/login", data={"email": "m@example.com", "password": "correct horse"})
    assert r.status_code == 400


def test_inactive_user_cannot_log_in(client, ctx):
    user = factories.user("gone@example.com", password="correct horse")
    user.active = False
    from xtag.extensions import db

    db.session.commit()
    r = client.post("/login", data={"email": "gone@example.com", "password": "correct horse"})
    assert r.status_code == 200 and "Wrong email or password" in r.get_data(as_text=True)


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/sites", "/sites"),
        ("//evil.example", None),
        ("https://evil.example/", None),
        ("/\\evil", None),
        ("/\r\nSet-Cookie: session=forged", None),
        ("/sites\x00", None),
        ("", None),
    ],
)
def test_safe_next(target, safe):
    from xtag.admin.auth import safe_next

    assert safe_next(target) == safe


def test_dashboard_warns_when_no_worker_is_alive(app, client, ctx):
    from xtag.pipeline import consuming

    factories.user("m@example.com", password="correct horse")
    client.post("/login", data={"email": "m@example.com", "password": "correct horse"})
    assert "No worker is running" in client.get("/").get_data(as_text=True)
    consuming.Consumer(app, name="w1").heartbeat()
    page = client.get("/").get_data(as_text=True)
    assert "No worker is running" not in page
    assert re.search(r'class="figure">1</span> workers alive', page)


def test_ten_failures_lock_the_account_from_that_address_only(app, client, ctx):
    """An attacker guessing from one address is locked out; the admin, from
    another address, still logs in with the right password (ASVS 2.2.1)."""
    from xtag.pipeline import queues
    from xtag.services import limits

    factories.user("m@example.com", password="correct horse")
    for _ in range(10):
        r = client.post("/login", data={"email": "m@example.com", "password": "wrong"})
        assert r.status_code == 200 and "Wrong email or password" in r.get_data(as_text=True)
    locked = client.post("/login", data={"email": "m@example.com", "password": "correct horse"})
    assert locked.status_code == 429 and "Too many failed attempts" in locked.get_data(as_text=True)
    assert client.get("/").status_code == 302  # not logged in
    waits = limits.login_locked_for(queues.redis_client(), "m@example.com", "127.0.0.1")
    assert 14 * 60 < waits <= 15 * 60
    elsewhere = {"REMOTE_ADDR": "203.0.113.50"}
    r = client.post(
        "/login",
        data={"email": "m@example.com", "password": "correct horse"},
        environ_base=elsewhere,
    )
    assert r.status_code == 302


def test_an_address_spraying_many_accounts_is_locked(app, client, ctx):
    for n in range(50):
        client.post("/login", data={"email": f"u{n}@example.com", "password": "wrong"})
    r = client.post("/login", data={"email": "new@example.com", "password": "wrong"})
    assert r.status_code == 429


def test_unknown_and_known_accounts_take_as_long_to_refuse(client, ctx):
    import time

    factories.user("real@example.com", password="correct horse")

    def timed(email: str) -> float:
        started = time.perf_counter()
        client.post("/login", data={"email": email, "password": "wrong password"})
        return time.perf_counter() - started

    timed("warm-up@example.com")
    known = min(timed("real@example.com") for _ in range(3))
    unknown = min(timed(f"nobody{n}@example.com") for n in range(3))
    assert unknown > known * 0.5, (known, unknown)  # both pay for a password hash


def _login(client, base_url="http://localhost"):
    with client.application.app_context():
        if not db.session.scalar(select(User).filter_by(email="m@example.com")):
            factories.user("m@example.com", password="correct horse")
    return client.post(
        "/login", data={"email": "m@example.com", "password": "correct horse"}, base_url=base_url
    )


def test_session_cookie_expires_when_idle_and_is_secure_over_https(app):
    # (no shared app context: Flask-Login would remember the first login for the second)
    plain = _login(app.test_client()).headers["Set-Cookie"]
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Secure" not in plain
    expires = parsedate_to_datetime(re.search(r"Expires=([^;]+)", plain).group(1))
    idle = expires - datetime.now(UTC)  # not a cookie that lives as long as the browser
    assert timedelta(minutes=118) < idle <= timedelta(minutes=120)
    secure = _login(app.test_client(), "https://localhost").headers["Set-Cookie"]
    assert "; Secure" in secure


def test_a_session_ends_after_its_maximum_age_however_active(client, ctx):
    _login(client)
    assert client.get("/").status_code == 200
    with client.session_transaction() as session:
        session["login_at"] -= 12 * 3600 + 1
    r = client.get("/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert "session has expired" in client.get(r.headers["Location"]).get_data(as_text=True)


def test_error_pages_say_what_to_do_and_never_show_a_stack_trace(make_app, ctx):
    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production

    @app.route("/boom")
    def boom():
        raise RuntimeError("internal detail that must stay in the log")

    client = app.test_client()
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "nothing at this address" in missing.get_data(
        as_text=True
    )
    broken = client.get("/boom")
    page = broken.get_data(as_text=True)
    assert broken.status_code == 500 and "Something went wrong on our side" in page
    assert "internal detail" not in page and "Traceback" not in page
    assert broken.headers["X-Frame-Options"] == "DENY"


def _post_routes(app) -> list[str]:
    """Every admin URL that takes a POST: 1 for each id, the first choice of each any()."""
    return sorted(
        re.sub(r"<(?:int:)?\w+>", "1", re.sub(r"<any\((\w+)[^>]*>", r"\1", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("admin.") and "POST" in rule.methods
    )


def test_every_admin_form_refuses_a_post_without_its_csrf_token(app, client):
    with app.app_context():
        factories.user("root@example.com", role="admin", password="correct horse")
    client.post("/login", data={"email": "root@example.com", "password": "correct horse"})
    app.config["WTF_CSRF_ENABLED"] = True
    routes = _post_routes(app)
    assert len(routes) >= 15 and "/sites/1/preview" in routes and "/deliveries/retry" in routes
    for path in routes:
        r = client.post(path, data={"name": "x"})
        assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True), path


FOR_EVERYONE = {
    "admin.login", "admin.logout", "admin.index", "admin.sites", "admin.site", "admin.events",
    "admin.deliveries", "admin.delivery_detail", "admin.mappings", "admin.mapping_edit",
    "admin.mapping_change", "admin.live_preview", "admin.sample", "admin.pixel_edit",
    "admin.pixel_delete", "admin.site_test_event",
}  # fmt: skip


def test_every_other_admin_page_refuses_a_marketer(app, client):
    """Pages are for admins unless listed above: a new page is refused to
    marketers until it is deliberately opened to them."""
    with app.app_context():
        factories.user("m@example.com", password="correct horse")
    client.post("/login", data={"email": "m@example.com", "password": "correct horse"})
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin.") or rule.endpoint in FOR_EVERYONE:
            continue
        path = re.sub(r"<(?:int:)?\w+>", "1", re.sub(r"<any\((\w+)[^>]*>", r"\1", rule.rule))
        for method in sorted(rule.methods & {"GET", "POST"}):
            r = client.open(path, method=method)
            assert r.status_code == 403, (method, path)
            assert "This page is for admins" in r.get_data(as_text=True)
            checked += 1
    assert checked >= 14
