"""Connect an X account from the admin: 3-legged OAuth 1.0a and OAuth 2.0 with PKCE,
end to end against the fake X, with the flow in progress kept out of reach."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select

from tests.fake_x import FakeX
from tests.support import factories, pii
from tests.support.sending import basic, order
from tests.support.shop import EVENT, PIXEL
from tests.support.web import csrf, login
from xtag.extensions import db
from xtag.models import AuditEntry, Connection, Mapping, Pixel
from xtag.pipeline import queues

SECRET = pii.SECRETS[1]  # a value the leak scan after every test looks for
CALLBACK = "http://localhost/connections/connect/{}/callback"
OAUTH1 = {"name": "Brand handle", "consumer_key": "ck-test", "consumer_secret": SECRET}
OAUTH2 = {"name": "Brand OAuth 2", "client_id": "cid-test", "client_secret": SECRET}
FORMS = {"oauth1": OAUTH1, "oauth2": OAUTH2}


@pytest.fixture
def fake(app):
    """A fake X whose app secrets are ones the leak scan knows, and the app pointed at it."""
    with FakeX(consumer_secret=SECRET, client_secret=SECRET) as server:
        server.oauth1_callback_urls = {CALLBACK.format("oauth1")}
        server.oauth2_redirect_uris = {CALLBACK.format("oauth2")}
        app.config.update(
            XTAG_X_API_BASE=server.base_url,
            XTAG_X_OAUTH1_BASE=server.base_url,
            XTAG_X_OAUTH2_AUTHORIZE_URL=f"{server.base_url}/i/oauth2/authorize",
            XTAG_X_OAUTH2_TOKEN_URL=f"{server.base_url}/2/oauth2/token",
            XTAG_X_TIMEOUT_SECONDS=1,
        )
        yield server


def start(client, kind: str, **changes) -> str:
    """Submit the start form; the page sends the browser on to X. Returns X's URL."""
    r = client.post(f"/connections/connect/{kind}", data={**FORMS[kind], **changes})
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store", page
    url = html.unescape(re.search(r'id="continue" href="([^"]+)"', page).group(1))
    refresh = re.search(r'http-equiv="refresh" content="0; url=([^"]+)"', page)
    assert html.unescape(refresh.group(1)) == url
    return url


def on_x(url: str) -> str:
    """The browser on X's authorize page; X answers at once and sends it back."""
    r = requests.get(url, allow_redirects=False, timeout=5)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def back(client, location: str) -> str:
    """The browser back at xtag's callback: it lands on the connections page."""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == "http://localhost"
    r = client.get(f"{parts.path}?{parts.query}")
    assert r.status_code == 302 and r.headers["Location"] == "/connections"
    return client.get("/connections").get_data(as_text=True)


def flows() -> list[bytes]:
    return list(queues.redis_client().scan_iter("xtag:connect:*"))


def stored() -> str:
    """Everything in Redis and the database, as the leak scan reads it."""
    return pii._redis_text(queues.redis_client()) + pii._database_text(db)


def session_cookie(app, client) -> tuple[str, dict]:
    raw = client.get_cookie("session").value
    return raw, app.session_interface.get_signing_serializer(app).loads(raw)


def connections() -> list[Connection]:
    db.session.expire_all()
    return list(db.session.scalars(select(Connection).order_by(Connection.id)))


def delivers_through(client, fake, connection, deliver):
    """A conversion sent with the connection is accepted by X."""
    site = factories.site(default_phone_region="US")
    pixel = Pixel(pixel_id=PIXEL, name="Main", connection_id=connection.id)
    db.session.add(pixel)
    db.session.add(Mapping(site=site, event_name="Order Completed", pixel=pixel, x_event_id=EVENT))
    db.session.commit()
    assert client.post("/v1/track", json=order(1), headers=basic(site.write_key)).status_code == 200
    deliver()
    [call] = fake.calls()
    assert call.status == 200 and call.authenticated
    return call


def test_oauth1_connects_an_account_audited_and_it_delivers(app, client, ctx, fake, deliver):
    login(client, "admin")
    page = client.get("/connections").get_data(as_text=True)
    assert "/connections/connect/oauth1" in page and "Add a connection with tokens" in page
    assert CALLBACK.format("oauth1") in client.get("/connections/connect/oauth1").get_data(
        as_text=True
    )
    url = start(client, "oauth1")
    assert url.startswith(f"{fake.base_url}/oauth/authorize?oauth_token=")
    [asked] = fake.calls("oauth1_request_token")
    assert asked.status == 200 and "oauth_callback=" in asked.headers["Authorization"]
    request_token = parse_qs(urlsplit(url).query)["oauth_token"][0]
    request_secret = fake._request_tokens[request_token]["secret"]

    # Waiting for X: the secrets are neither in the cookie nor in clear in Redis.
    raw, content = session_cookie(app, client)
    [key] = flows()
    assert 0 < queues.redis_client().ttl(key) <= 600
    assert key.decode().endswith(content["xtag_connect_flow"])
    for secret in (SECRET, request_secret):
        assert secret not in raw and secret not in str(content) and secret not in stored()

    page = back(client, on_x(url))
    assert "Connected Brand handle to @xtag_test" in page and "error" not in page
    [connection] = connections()
    [issued] = [t for t, v in fake.oauth1_tokens().items() if t != fake.oauth1_access_token]
    assert (connection.name, connection.auth_type) == ("Brand handle", "oauth1")
    assert connection.credentials == {
        "consumer_key": "ck-test",
        "consumer_secret": SECRET,
        "access_token": issued,
        "access_token_secret": fake.oauth1_tokens()[issued]["secret"],
    }
    assert fake.oauth1_tokens()[issued]["secret"] not in stored() and not flows()
    [entry] = db.session.scalars(select(AuditEntry).where(AuditEntry.object_type == "connection"))
    assert (entry.action, entry.object_id, entry.changes["credentials"]) == (
        "create",
        str(connection.id),
        "changed",
    )
    call = delivers_through(client, fake, connection, deliver)
    assert f'oauth_token="{issued}"' in call.headers["Authorization"].replace("%2D", "-")


def test_oauth2_with_pkce_connects_an_account_that_delivers(app, client, ctx, fake, deliver):
    login(client, "admin")
    url = start(client, "oauth2")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith(f"{fake.base_url}/i/oauth2/authorize?")
    assert query["scope"] == "ads_management offline.access"
    assert (query["response_type"], query["client_id"]) == ("code", "cid-test")
    assert query["redirect_uri"] == CALLBACK.format("oauth2")
    assert query["code_challenge_method"] == "S256" and len(query["state"]) >= 32
    raw, content = session_cookie(app, client)
    assert query["state"] not in raw + stored() and SECRET not in raw + str(content)
    assert not fake.calls("oauth2_token")

    page = back(client, on_x(url))
    assert "Connected Brand OAuth 2." in page
    [exchange] = fake.calls("oauth2_token")
    verifier = exchange.form["code_verifier"]
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert digest.decode() == query["code_challenge"] and 43 <= len(verifier) <= 128
    assert exchange.form["grant_type"] == "authorization_code" and exchange.status == 200
    assert exchange.headers["Authorization"].startswith("Basic ")
    assert verifier not in stored() and fake.refresh_token not in stored() and not flows()
    [connection] = connections()
    credentials = connection.credentials
    assert (connection.auth_type, credentials["client_secret"]) == ("oauth2", SECRET)
    assert (credentials["access_token"], credentials["refresh_token"]) == (
        fake.access_token,
        fake.refresh_token,
    )
    assert abs(credentials["expires_at"] - (time.time() + fake.access_token_lifetime)) < 60
    call = delivers_through(client, fake, connection, deliver)
    assert call.headers["Authorization"] == f"Bearer {fake.access_token}"


def test_a_public_oauth2_client_connects_without_a_secret(client, ctx, fake):
    login(client, "admin")
    page = back(client, on_x(start(client, "oauth2", client_secret="")))
    assert "Connected Brand OAuth 2." in page
    [exchange] = fake.calls("oauth2_token")
    assert "Authorization" not in exchange.headers and exchange.form["client_id"] == "cid-test"
    assert "client_secret" not in connections()[0].credentials


@pytest.mark.parametrize("kind", ["oauth1", "oauth2"])
def test_cancel_on_x_adds_nothing_and_says_so(client, ctx, fake, kind):
    login(client, "admin")
    url = start(client, kind)
    fake.deny_authorization = True
    page = back(client, on_x(url))
    assert "did not authorise xtag, so no connection was added" in page
    assert not connections() and not flows()


def test_a_foreign_state_is_refused_and_ends_the_flow(client, ctx, fake):
    login(client, "admin")
    location = on_x(start(client, "oauth2"))
    forged = re.sub(r"state=[^&]+", "state=someone-elses", location)
    assert "its state does not match" in back(client, forged)
    assert not connections() and not flows()
    assert "start again" in back(client, location)  # the real answer comes too late
    assert not connections()


def test_an_oauth1_answer_for_another_request_token_is_refused(client, ctx, fake):
    login(client, "admin")
    location = on_x(start(client, "oauth1"))
    page = back(client, re.sub(r"oauth_token=[^&]+", "oauth_token=other", location))
    assert "does not belong to the connection being made" in page and not connections()


@pytest.mark.parametrize("kind", ["oauth1", "oauth2"])
def test_an_expired_flow_says_start_again(client, ctx, fake, kind):
    login(client, "admin")
    location = on_x(start(client, kind))
    [key] = flows()
    queues.redis_client().pexpire(key, 1)
    time.sleep(0.05)
    page = back(client, location)
    assert "The connection to X expired (it must be finished within 10 minutes)" in page
    assert not connections()


def test_a_callback_without_a_flow_in_this_browser_says_so(client, ctx, fake):
    login(client, "admin")
    page = back(client, "http://localhost/connections/connect/oauth2/callback?state=s&code=c")
    assert "No connection to X was being made in this browser" in page
    assert not fake.requests


def test_only_the_admin_who_started_can_finish(app, client, ctx, fake):
    login(client, "admin")
    location = on_x(start(client, "oauth1"))
    with client.session_transaction() as started:
        flow_id = started["xtag_connect_flow"]
    client.post("/logout")  # a new session after logout and login: the flow is not in it
    factories.user("other@example.com", role="admin")
    client.post("/login", data={"email": "other@example.com", "password": "correct horse"})
    assert "No connection to X was being made in this browser" in back(client, location)
    other = app.test_client()  # another admin who got hold of the flow's id
    other.post("/login", data={"email": "other@example.com", "password": "correct horse"})
    with other.session_transaction() as stolen:
        stolen["xtag_connect_flow"] = flow_id
    assert "started by another user" in back(other, location)
    assert not connections() and not fake.calls("oauth1_access_token")


def test_wrong_app_keys_show_what_x_said_on_the_form(client, ctx, fake):
    login(client, "admin")
    r = client.post("/connections/connect/oauth1", data={**OAUTH1, "consumer_secret": "wrong"})
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 200 and "Asking X for a request token failed" in page
    assert "X answered HTTP 401: Could not authenticate you." in page
    assert "Check the consumer key and secret" in page
    assert 'value="Brand handle"' in page and not flows()


def test_x_not_answering_in_time_is_a_clear_message(client, ctx, fake):
    login(client, "admin")
    fake.hang_next(3, endpoint="oauth1_request_token")
    r = client.post("/connections/connect/oauth1", data=OAUTH1)
    assert r.status_code == 200 and "X did not answer in time" in r.get_data(as_text=True)
    assert not flows()


@pytest.mark.parametrize(
    ("endpoint", "status", "said"),
    [
        ("oauth2_token", 400, "X answered HTTP 400: Invalid parameter."),
        ("oauth2_token", 503, "X answered HTTP 503: Over capacity."),
        ("oauth1_access_token", 401, "X answered HTTP 401: This request is not properly"),
    ],
)
def test_x_refusing_the_token_exchange_is_a_clear_message(
    client, ctx, fake, endpoint, status, said
):
    login(client, "admin")
    location = on_x(start(client, endpoint.split("_")[0]))
    fake.fail_next(status, endpoint=endpoint)
    page = html.unescape(back(client, location))
    assert "for an access token failed" in page or "for tokens failed" in page
    assert said in page and not connections() and not flows()


def test_a_revoked_code_shows_x_s_oauth_error(client, ctx, fake):
    login(client, "admin")
    location = on_x(start(client, "oauth2"))
    fake._codes.clear()
    page = html.unescape(back(client, location))
    assert "invalid_request: Value passed for the authorization code was invalid" in page


def test_the_form_asks_for_what_is_missing_before_going_to_x(client, ctx, fake):
    login(client, "admin")
    r = client.post("/connections/connect/oauth2", data={"name": "", "client_id": ""})
    assert r.status_code == 200 and r.get_data(as_text=True).count("This field is required") == 2
    assert not fake.requests and not flows()


@pytest.mark.parametrize("kind", ["oauth1", "oauth2"])
def test_start_forms_need_the_csrf_token(app, client, ctx, fake, kind):
    login(client, "admin")
    app.config["WTF_CSRF_ENABLED"] = True
    assert client.post(f"/connections/connect/{kind}", data=FORMS[kind]).status_code == 400
    assert not fake.requests and not flows()
    token = csrf(client, f"/connections/connect/{kind}")
    assert on_x(start(client, kind, csrf_token=token)).startswith(CALLBACK.format(kind))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/connections/connect/oauth1"),
        ("post", "/connections/connect/oauth1"),
        ("get", "/connections/connect/oauth2"),
        ("post", "/connections/connect/oauth2"),
        ("get", "/connections/connect/oauth1/callback?oauth_token=t&oauth_verifier=v"),
        ("get", "/connections/connect/oauth2/callback?state=s&code=c"),
    ],
)
def test_marketers_get_403_on_every_connect_route(client, ctx, fake, method, path):
    login(client, "marketer")
    data = {"data": OAUTH1} if method == "post" else {}
    assert getattr(client, method)(path, **data).status_code == 403
    assert not fake.requests and not flows()
    client.post("/logout")
    assert client.get(path).status_code == 302  # and anonymous visitors log in first
